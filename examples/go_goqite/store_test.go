package main

import (
	"database/sql"
	_ "embed"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

//go:embed testdata/goqite_v0.4.0_schema_sqlite.sql
var goqiteSchema string

func TestConnectionsRunWithTheConfiguredPragmas(t *testing.T) {
	for _, tc := range []struct {
		journal, sync string
		busy, cache   string
		want          Pragmas
	}{
		{"WAL", "NORMAL", "10000", "64", Pragmas{"wal", 1, 10000, -65536}},
		{"DELETE", "FULL", "0", "2", Pragmas{"delete", 2, 0, -2048}},
		{"WAL", "OFF", "250", "1", Pragmas{"wal", 0, 250, -1024}},
	} {
		path := newDatabase(t, tc.journal)
		db := workerDB(t, path, map[string]string{"QUAERO_JOURNAL_MODE": tc.journal, "QUAERO_SYNCHRONOUS": tc.sync,
			"QUAERO_BUSY_TIMEOUT_MS": tc.busy, "QUAERO_CACHE_SIZE_MB": tc.cache})
		got, version, err := ReadPragmas(t.Context(), db)
		if err != nil || got != tc.want || version == "" {
			t.Errorf("%+v: got %+v, %q, %v; want %+v", tc, got, version, err, tc.want)
		}
	}
}

func TestDSNChoosesTheBeginMode(t *testing.T) {
	for immediate, want := range map[string]string{"true": "_txlock=immediate", "false": "_txlock=deferred"} {
		dsn, err := DSN(testConfig(t, "/tmp/a b?#.db", map[string]string{"QUAERO_BEGIN_IMMEDIATE": immediate}))
		if err != nil || !strings.Contains(dsn, want) || !strings.HasPrefix(dsn, "file:/tmp/a%20b%3F%23.db?") {
			t.Errorf("DSN %q, %v: want an escaped file URI with %s", dsn, err, want)
		}
	}
}

// With a deferred BEGIN the whole finish_child still commits when nobody else writes.
func TestFinishChildMovesTheParentOnce(t *testing.T) {
	for _, immediate := range []string{"true", "false"} {
		path := newDatabase(t, "WAL")
		ids := seed(t, path, "R1", 1, 2)
		db := workerDB(t, path, map[string]string{"QUAERO_BEGIN_IMMEDIATE": immediate})
		parent := func() (status string, completed, failed, pending int) {
			row := db.QueryRow("select status, completed_urls, failed_urls, pending_urls from crawl_jobs where id = 'R1-parent-1'")
			if err := row.Scan(&status, &completed, &failed, &pending); err != nil {
				t.Fatal(err)
			}
			return
		}
		if counted, err := FinishChild(t.Context(), db, ids[0], "R1-parent-1", false, ""); !counted || err != nil {
			t.Fatalf("first finish: %v, %v", counted, err)
		}
		if counted, err := FinishChild(t.Context(), db, ids[0], "R1-parent-1", false, ""); counted || err != nil {
			t.Fatalf("second finish of the same child: %v, %v; want a duplicate", counted, err)
		}
		if s, c, f, p := parent(); s != "running" || c != 1 || f != 0 || p != 1 {
			t.Errorf("parent %s %d/%d/%d, want running 1 completed 0 failed 1 pending", s, c, f, p)
		}
		if counted, err := FinishChild(t.Context(), db, ids[1], "R1-parent-1", true, strings.Repeat("é", 600)); !counted || err != nil {
			t.Fatalf("failed child: %v, %v", counted, err)
		}
		if s, c, f, p := parent(); s != "completed" || c != 1 || f != 1 || p != 0 {
			t.Errorf("parent %s %d/%d/%d, want completed 1 completed 1 failed 0 pending", s, c, f, p)
		}
		var errText string
		if err := db.QueryRow("select error from crawl_jobs where id = ?", ids[1]).Scan(&errText); err != nil || len([]rune(errText)) != 500 {
			t.Errorf("stored error of %d characters (%v), want 500 as store.py keeps", len([]rune(errText)), err)
		}
		if counted, err := FinishChild(t.Context(), db, "no-such-child", "R1-parent-1", false, ""); counted || err != nil {
			t.Errorf("unknown child: %v, %v; want not counted", counted, err)
		}
	}
}

func TestMarkRunningLeavesFinishedJobsAlone(t *testing.T) {
	path := newDatabase(t, "WAL")
	ids := seed(t, path, "R1", 1, 2)
	db := workerDB(t, path, nil)
	if _, err := FinishChild(t.Context(), db, ids[0], "R1-parent-1", false, ""); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if err := MarkRunning(t.Context(), db, id); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(t, db, "select count(*) from crawl_jobs where status = 'running' and parent_id != ''"); n != 1 {
		t.Errorf("%d running children, want only the unfinished one", n)
	}
}

// The plugin's goqite table is goqite v0.4.0's: same columns, index and trigger.
func TestPluginSchemaIsGoqites(t *testing.T) {
	describe := func(schema string) []string {
		db := openTestDB(t, filepath.Join(t.TempDir(), "s.db"), 0)
		mustExec(t, db, schema)
		var out []string
		for _, q := range []string{
			"select name || ' ' || type || ' ' || \"notnull\" || ' ' || coalesce(dflt_value, '') || ' ' || pk from pragma_table_info('goqite')",
			"select name || ' ' || \"unique\" from pragma_index_list('goqite')",
			"select name || ' ' || desc || ' ' || coll from pragma_index_xinfo('goqite_queue_priority_created_idx') where key",
			"select name from sqlite_master where type = 'trigger'",
			"select strict from pragma_table_list('goqite')",
		} {
			out = append(out, strings.Join(column(t, db, q), "; "))
		}
		return out
	}
	// strftime(f) and strftime(f, 'now') are the same call: SQLite's time value defaults to now
	plugin := describe(strings.ReplaceAll(pluginSchema, "%fZ', 'now')", "%fZ')"))
	goqite := describe(goqiteSchema)
	if !reflect.DeepEqual(plugin, goqite) {
		t.Errorf("the plugin's goqite table differs from goqite v0.4.0's:\nplugin %q\ngoqite %q", plugin, goqite)
	}
}

func column(t *testing.T, db *sql.DB, query string) []string {
	t.Helper()
	rows, err := db.Query(query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// testdata/schema.sql and the SQL in store.go are copies: this fails when the Python source
// they were copied from changes (skipped where the plugin's source is not beside this directory).
func TestCopiesMatchThePluginSource(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "..", "pytest_quaero", "core", name))
		if err != nil {
			t.Skipf("the plugin's source is not here: %v", err)
		}
		return strings.ReplaceAll(string(b), "{NOW}", now)
	}
	norm := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	queuePy, storePy := read("queue.py"), read("store.py")
	schema := norm(pluginSchema)
	for _, part := range []struct{ src, pattern string }{
		{queuePy, `(?s)_TABLE = f"""(.*?)"""`},
		{queuePy, `(?s)_INDEX = "(.*?)"`},
		{storePy, `(?s)\nSCHEMA = """(.*?)"""`},
	} {
		m := regexp.MustCompile(part.pattern).FindStringSubmatch(part.src)
		if m == nil || !strings.Contains(schema, norm(m[1])) {
			t.Errorf("testdata/schema.sql is missing the plugin's %s", part.pattern)
		}
	}
	// The store statements, as the plugin builds them (testdata/plugin_sql.json, which the plugin's
	// tests/test_go_sql_contract.py keeps equal to its source).
	sqlite := pluginSQL(t)["sqlite"]
	for key, stmt := range map[string]string{"mark_running": markRunningSQL, "child_status": childStatusSQL,
		"finish_child": finishChildSQL, "parent_progress": parentProgressSQL} {
		if norm(stmt) != norm(sqlite[key]) {
			t.Errorf("store.go's %s drifted from the plugin's:\n%s\nwant\n%s", key, stmt, sqlite[key])
		}
	}
}

//go:embed testdata/plugin_sql.json
var pluginSQLJSON []byte

// pluginSQL is testdata/plugin_sql.json: {"sqlite": {name: statement}, "postgresql": {...}}.
func pluginSQL(t *testing.T) map[string]map[string]string {
	t.Helper()
	var statements map[string]map[string]string
	if err := json.Unmarshal(pluginSQLJSON, &statements); err != nil {
		t.Fatalf("testdata/plugin_sql.json: %v", err)
	}
	return statements
}
