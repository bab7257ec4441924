package main

import (
	"database/sql"
	"fmt"
	"testing"
	"time"

	"maragu.dev/goqite"
)

// drained: every seeded job has a job_finished event and the queue table is empty.
func drained(t *testing.T, r *running, db *sql.DB, jobs int) func() bool {
	return func() bool {
		return len(only(r.rec.events(t), "job_finished")) >= jobs && count(t, db, "select count(*) from goqite") == 0
	}
}

// checkDrainedRun is what a passing run must show: each job claimed and completed exactly once,
// the parents' counters and status right, every worker started and stopped, nothing crashed.
func checkDrainedRun(t *testing.T, events []event, db *sql.DB, ids []string, workers []int, parents, children int) {
	t.Helper()
	completed := map[string]int{}
	for _, e := range only(events, "job_finished") {
		if e.str("outcome") != "completed" {
			t.Errorf("job %s: outcome %q (%s)", e.str("job_id"), e.str("outcome"), e.str("error"))
		}
		if _, ok := e["latency_ms"]; !ok {
			t.Errorf("job %s: no latency_ms although the body has created_at", e.str("job_id"))
		}
		completed[e.str("job_id")]++
	}
	for _, id := range ids {
		if completed[id] != 1 {
			t.Errorf("job %s completed %d times, want 1", id, completed[id])
		}
	}
	for _, e := range only(events, "claimed") {
		if e.num("delivery") != 1 {
			t.Errorf("claim of %s: delivery %v, want 1 (nothing was redelivered)", e.str("job_id"), e["delivery"])
		}
	}
	if n := len(only(events, "claimed")); n != len(ids) {
		t.Errorf("%d claims, want %d", n, len(ids))
	}
	for _, name := range []string{"crashed", "error", "lock_error"} {
		if got := only(events, name); len(got) > 0 {
			t.Errorf("%d %s events, first %v", len(got), name, got[0])
		}
	}
	for _, name := range []string{"worker_started", "worker_stopped"} {
		seen := map[int]int{}
		for _, e := range only(events, name) {
			seen[e.worker()]++
		}
		for _, w := range workers {
			if seen[w] != 1 {
				t.Errorf("worker %d: %d %s events, want 1", w, seen[w], name)
			}
		}
		if len(seen) != len(workers) {
			t.Errorf("%s from workers %v, want %v", name, seen, workers)
		}
	}
	ops := map[string]int{}
	for _, e := range only(events, "operation") {
		if e.str("outcome") != "ok" || e.num("attempts") != 1 {
			t.Errorf("operation %v: want ok at the first attempt", e)
		}
		ops[e.str("operation")]++
	}
	for _, op := range []string{"save_job", "progress_update", "queue_delete"} {
		if ops[op] != len(ids) {
			t.Errorf("%d %s operations, want one per job (%d)", ops[op], op, len(ids))
		}
	}
	if ops["connect"] != len(workers) {
		t.Errorf("%d connect operations, want one per worker", ops["connect"])
	}
	if n := count(t, db, "select count(*) from crawl_jobs where parent_id = '' and status = 'completed' "+
		"and completed_urls = ? and failed_urls = 0 and pending_urls = 0 and total_urls = ?", children, children); n != parents {
		t.Errorf("%d of %d parents completed with %d completed_urls and 0 pending", n, parents, children)
	}
	if n := count(t, db, "select count(*) from crawl_jobs where parent_id != '' and status = 'completed' "+
		"and started_at is not null and completed_at is not null"); n != len(ids) {
		t.Errorf("%d of %d children completed", n, len(ids))
	}
}

func TestPoolDrainsTheQueue(t *testing.T) {
	for _, tc := range []struct{ name, journal, immediate string }{
		{"wal_immediate", "WAL", "true"},
		{"delete_immediate", "DELETE", "true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := newDatabase(t, tc.journal)
			ids := seed(t, path, "R1", 3, 15)
			cfg := testConfig(t, path, map[string]string{
				"QUAERO_WORKERS": "3", "QUAERO_POOL_WORKERS": "3", "QUAERO_JOURNAL_MODE": tc.journal,
				"QUAERO_BEGIN_IMMEDIATE": tc.immediate,
			})
			r := startPool(t, cfg)
			db := openTestDB(t, path, 10000)
			waitUntil(t, "the drain", drained(t, r, db, len(ids)))
			if crashed := r.stopAndWait(t); crashed != 0 {
				t.Fatalf("%d workers crashed", crashed)
			}
			checkDrainedRun(t, r.rec.events(t), db, ids, []int{0, 1, 2}, 3, 15)
		})
	}
}

// A per-worker process (QUAERO_WORKERS=1) with pool index base 4 waits 4 staggers; a pool of
// three with base 0 waits 0, 1 and 2 staggers: each worker_started is at or after its turn.
func TestStaggerByPoolIndex(t *testing.T) {
	path := newDatabase(t, "WAL")
	ids := seed(t, path, "R1", 1, 4)
	cfg := testConfig(t, path, map[string]string{
		"QUAERO_WORKERS": "2", "QUAERO_WORKER_INDEX_BASE": "3", "QUAERO_POOL_WORKERS": "5", "QUAERO_STAGGER_MS": "40",
	})
	r := startPool(t, cfg)
	started := time.Now()
	db := openTestDB(t, path, 10000)
	isDrained := drained(t, r, db, len(ids))
	waitUntil(t, "the drain and both workers", func() bool {
		return isDrained() && len(only(r.rec.events(t), "worker_started")) == 2
	})
	r.stopAndWait(t)
	events := r.rec.events(t)
	checkDrainedRun(t, events, db, ids, []int{3, 4}, 1, 4)
	for _, e := range only(events, "worker_started") {
		turn := started.Add(time.Duration(e.worker()) * cfg.Stagger)
		if e.num("ts") < unixSeconds(turn)-0.002 { // the pool's Start is a hair before `started`
			t.Errorf("worker %d started %.3fs before its turn", e.worker(), unixSeconds(turn)-e.num("ts"))
		}
	}
}

func TestStopFinishesTheJobInProgress(t *testing.T) {
	path := newDatabase(t, "WAL")
	ids := seed(t, path, "R1", 1, 3)
	cfg := testConfig(t, path, map[string]string{"QUAERO_WORKERS": "1", "QUAERO_JOB_TIME_MS": "300..300"})
	r := startPool(t, cfg)
	waitUntil(t, "a claim", func() bool { return len(only(r.rec.events(t), "claimed")) > 0 })
	r.stopAndWait(t)
	events := r.rec.events(t)
	claimed, finished := only(events, "claimed"), only(events, "job_finished")
	if len(claimed) != 1 || len(finished) != 1 || finished[0].str("job_id") != claimed[0].str("job_id") ||
		finished[0].str("outcome") != "completed" {
		t.Fatalf("want the one claimed job completed, got claims %v, finished %v", claimed, finished)
	}
	if last := events[len(events)-1]; last.str("event") != "worker_stopped" {
		t.Errorf("last event %v, want worker_stopped", last)
	}
	db := openTestDB(t, path, 10000)
	if n := count(t, db, "select count(*) from goqite where received = 0"); n != len(ids)-1 {
		t.Errorf("%d untouched messages, want %d (no new job after the stop)", n, len(ids)-1)
	}
	if n := count(t, db, "select completed_urls from crawl_jobs where id = 'R1-parent-1'"); n != 1 {
		t.Errorf("parent completed_urls %d, want 1", n)
	}
}

// A second SIGTERM (Abandon) cuts the job short: no job_finished, the child still running,
// its message in flight until the visibility timeout, the worker stopped.
func TestAbandonLeavesTheJobInProgress(t *testing.T) {
	path := newDatabase(t, "WAL")
	seed(t, path, "R1", 1, 1)
	cfg := testConfig(t, path, map[string]string{"QUAERO_WORKERS": "1", "QUAERO_JOB_TIME_MS": "60000..60000"})
	r := startPool(t, cfg)
	waitUntil(t, "a claim", func() bool { return len(only(r.rec.events(t), "claimed")) > 0 })
	r.abandon()
	r.stopAndWait(t)
	events := r.rec.events(t)
	if got := only(events, "job_finished"); len(got) != 0 {
		t.Errorf("abandoned job reported finished: %v", got)
	}
	if got := only(events, "worker_stopped"); len(got) != 1 {
		t.Errorf("%d worker_stopped events, want 1", len(got))
	}
	db := openTestDB(t, path, 10000)
	if n := count(t, db, "select count(*) from goqite where received = 1"); n != 1 {
		t.Errorf("%d messages in flight, want the abandoned one", n)
	}
	if n := count(t, db, "select count(*) from crawl_jobs where id = 'R1-child-1-1' and status = 'running'"); n != 1 {
		t.Error("the abandoned child should still be running")
	}
}

// A job that already finished (a redelivery after a lost ack) is a duplicate: the parent's
// counters do not move again, and the message is deleted.
func TestAlreadyFinishedJobIsADuplicate(t *testing.T) {
	path := newDatabase(t, "WAL")
	ids := seed(t, path, "R1", 1, 2)
	db := openTestDB(t, path, 10000)
	counted, err := FinishChild(t.Context(), db, ids[0], "R1-parent-1", false, "")
	if err != nil || !counted {
		t.Fatalf("first finish: counted %v, err %v", counted, err)
	}
	r := startPool(t, testConfig(t, path, map[string]string{"QUAERO_WORKERS": "1"}))
	waitUntil(t, "the drain", drained(t, r, db, 2))
	r.stopAndWait(t)
	outcomes := map[string]string{}
	for _, e := range only(r.rec.events(t), "job_finished") {
		outcomes[e.str("job_id")] = e.str("outcome")
	}
	if outcomes[ids[0]] != "duplicate" || outcomes[ids[1]] != "completed" {
		t.Errorf("outcomes %v, want %s duplicate and %s completed", outcomes, ids[0], ids[1])
	}
	if n := count(t, db, "select completed_urls from crawl_jobs where id = 'R1-parent-1'"); n != 2 {
		t.Errorf("parent completed_urls %d, want 2 (the duplicate not counted twice)", n)
	}
}

func TestUndecodableMessageIsAnErrorLeftForRedelivery(t *testing.T) {
	path := newDatabase(t, "WAL")
	db := openTestDB(t, path, 10000)
	sendChild(t, db, "R1-child-1-1", "R1-parent-1", "u", "n", []byte("not json"), "+0.000 seconds")
	r := startPool(t, testConfig(t, path, map[string]string{"QUAERO_WORKERS": "1"}))
	waitUntil(t, "the job's end", func() bool { return len(only(r.rec.events(t), "job_finished")) == 1 })
	r.stopAndWait(t)
	f := only(r.rec.events(t), "job_finished")[0]
	if f.str("outcome") != "error" || f.str("error") == "" {
		t.Errorf("job_finished %v, want outcome error with its error", f)
	}
	if n := count(t, db, "select count(*) from goqite where received = 1"); n != 1 {
		t.Error("the message should be left for redelivery")
	}
}

// goqite's receive reads the plugin's timestamps and the plugin's DUE test reads goqite's:
// both are UTC RFC 3339 with milliseconds, compared as text.
func TestTimeFormatsAgree(t *testing.T) {
	path := newDatabase(t, "WAL")
	db := openTestDB(t, path, 10000)
	later := sendChild(t, db, "c-later", "p", "u", "n", encodeJob("c-later", "p", "u"), "+3600.000 seconds")
	due := sendChild(t, db, "c-due", "p", "u", "n", encodeJob("c-due", "p", "u"), "+0.000 seconds")
	q := goqite.New(goqite.NewOpts{DB: db, Name: "quaero_jobs", Timeout: time.Hour})
	m, err := q.Receive(t.Context())
	if err != nil || m == nil || string(m.ID) != due {
		t.Fatalf("receive: %v, %v; want the due message %s", m, err, due)
	}
	if m, err := q.Receive(t.Context()); err != nil || m != nil {
		t.Fatalf("receive: %v, %v; want nothing (%s is due in an hour)", m, err, later)
	}
	if err := q.Send(t.Context(), goqite.Message{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	// queue.py's DUE, and the format it takes as UTC as it is
	const due0 = "(case when timeout glob '????-??-??T??:??:??.???Z' then timeout " +
		"else coalesce(strftime('%Y-%m-%dT%H:%M:%fZ', timeout), timeout) end) <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
	if n := count(t, db, "select count(*) from goqite where body = x'78' and timeout glob '????-??-??T??:??:??.???Z' and "+due0); n != 1 {
		t.Error("a message goqite sent should be in the plugin's format and due now")
	}
	if n := count(t, db, "select count(*) from goqite where "+due0); n != 1 {
		t.Errorf("%d messages due by the plugin's test, want 1 (received one invisible for an hour, one an hour ahead)", n)
	}
}

func TestWorkTimeIsSeededPerJob(t *testing.T) {
	low, high := 5*time.Millisecond, 20*time.Millisecond
	a := WorkTime(7, "job-1", low, high)
	if a != WorkTime(7, "job-1", low, high) {
		t.Error("the same seed and job must give the same time")
	}
	if a < low || a > high {
		t.Errorf("%v outside [%v, %v]", a, low, high)
	}
	differ := 0
	for i := range 20 {
		id := fmt.Sprintf("job-%d", i)
		if WorkTime(7, id, low, high) != WorkTime(8, id, low, high) {
			differ++
		}
	}
	if differ == 0 {
		t.Error("the seed changes nothing")
	}
	if WorkTime(7, "job-1", 0, 0) != 0 || WorkTime(7, "job-1", low, low) != low {
		t.Error("a fixed time must be that time")
	}
}
