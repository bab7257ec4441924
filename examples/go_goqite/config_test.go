package main

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestConfigReadsTheProtocolEnvironment(t *testing.T) {
	cfg := testConfig(t, "/tmp/x.db", map[string]string{
		"QUAERO_STAGGER_MS": "500.0", "QUAERO_POLL_INTERVAL_MS": "1000", "QUAERO_JOB_TIME_MS": "5.5..20",
		"QUAERO_WORKER_INDEX_BASE": "3", "QUAERO_WORKERS": "1", "QUAERO_POOL_WORKERS": "4",
		"QUAERO_BEGIN_IMMEDIATE": "false", "QUAERO_JOURNAL_MODE": "delete", "QUAERO_RETRY_BACKOFF_MS": "0.5",
		"QUAERO_DISABLED_FIXES": "wal, immediate",
	})
	want := Config{
		Backend: BackendSQLite, EventsFD: 3, DBPath: "/tmp/x.db", Queue: "quaero_jobs", Workers: 1, IndexBase: 3, PoolWorkers: 4,
		Stagger: 500 * time.Millisecond, PollInterval: time.Second, BusyTimeoutMS: 10000, JournalMode: "DELETE",
		Synchronous: "NORMAL", CacheSizeMB: 2, BeginImmediate: false,
		Retry: Policy{5, 500 * time.Microsecond}, DeleteRetry: Policy{3, 200 * time.Millisecond},
		VisibilityTimeout: 300 * time.Second, MaxReceive: 3, JobTimeLow: 5500 * time.Microsecond,
		JobTimeHigh: 20 * time.Millisecond, Seed: 7, DisabledFixes: []string{"wal", "immediate"},
	}
	if strings.Join(cfg.DisabledFixes, ",") != "wal,immediate" {
		t.Errorf("disabled fixes %q", cfg.DisabledFixes)
	}
	cfg.DisabledFixes, want.DisabledFixes = nil, nil
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("config\n%+v\nwant\n%+v", cfg, want)
	}
}

func TestConfigDefaultsAreTheTemplates(t *testing.T) {
	cfg, err := LoadConfig(func(name string) string {
		return map[string]string{"QUAERO_PROTOCOL": "1", "QUAERO_EVENTS_FD": "3", "QUAERO_DB_PATH": "q.db"}[name]
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Workers != 2 || cfg.Stagger != 500*time.Millisecond || cfg.BusyTimeoutMS != 10000 ||
		cfg.Retry != (Policy{5, 100 * time.Millisecond}) || cfg.DeleteRetry != (Policy{3, 200 * time.Millisecond}) ||
		cfg.JournalMode != "WAL" || !cfg.BeginImmediate || cfg.PoolWorkers != 2 {
		t.Errorf("defaults %+v", cfg)
	}
}

func TestConfigErrorsNameTheVariable(t *testing.T) {
	for _, tc := range []struct{ name, value, want string }{
		{"QUAERO_PROTOCOL", "2", "protocol 1 only"},
		{"QUAERO_JOB_TIME_MS", "20..5", "QUAERO_JOB_TIME_MS"},
		{"QUAERO_JOB_TIME_MS", "5", "QUAERO_JOB_TIME_MS"},
		{"QUAERO_JOURNAL_MODE", "MEMORY", "want one of WAL, DELETE"},
		{"QUAERO_SYNCHRONOUS", "SOMETIMES", "QUAERO_SYNCHRONOUS"},
		{"QUAERO_RETRY_ATTEMPTS", "0", "QUAERO_RETRY_ATTEMPTS"},
		{"QUAERO_STAGGER_MS", "-1", "QUAERO_STAGGER_MS"},
		{"QUAERO_POLL_INTERVAL_MS", "NaN", "QUAERO_POLL_INTERVAL_MS"},
		{"QUAERO_BEGIN_IMMEDIATE", "maybe", "true or false"},
		{"QUAERO_EVENTS_FD", "x", "QUAERO_EVENTS_FD"},
		{"QUAERO_VISIBILITY_TIMEOUT_MS", "0", "must be > 0"},
		{"QUAERO_SEED", "1.5", "QUAERO_SEED"},
		{"QUAERO_BACKEND", "mysql", "want sqlite or postgresql"},
		{"QUAERO_GOQITE_RECEIVE", "nowait", "QUAERO_GOQITE_RECEIVE"},
	} {
		_, err := LoadConfig(testEnv("q.db", map[string]string{tc.name: tc.value}))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%q: error %v, want one saying %q", tc.name, tc.value, err, tc.want)
		}
	}
	if _, err := LoadConfig(func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "QUAERO_PROTOCOL") {
		t.Errorf("no environment: %v", err)
	}
}

func TestConfigReadsTheBackend(t *testing.T) {
	for value, want := range map[string]string{"": BackendSQLite, "sqlite": BackendSQLite, "PostgreSQL": BackendPostgreSQL} {
		cfg := testConfig(t, "q.db", map[string]string{"QUAERO_BACKEND": value})
		if cfg.Backend != want || cfg.ShippedReceive {
			t.Errorf("QUAERO_BACKEND=%q: backend %q (shipped receive %v), want %q", value, cfg.Backend, cfg.ShippedReceive, want)
		}
	}
	cfg := testConfig(t, "q.db", map[string]string{"QUAERO_GOQITE_RECEIVE": "goqite"})
	if !cfg.ShippedReceive {
		t.Error("QUAERO_GOQITE_RECEIVE=goqite: want goqite's own receive")
	}
	for sync, want := range map[string]string{"OFF": "off", "NORMAL": "off", "FULL": "on", "EXTRA": "on"} {
		if got := synchronousCommit(testConfig(t, "q.db", map[string]string{"QUAERO_SYNCHRONOUS": sync})); got != want {
			t.Errorf("QUAERO_SYNCHRONOUS=%s: synchronous_commit %s, want %s as the plugin maps it", sync, got, want)
		}
	}
}
