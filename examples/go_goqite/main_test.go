package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce   sync.Once
	builtBinary string
	buildErr    error
)

// binary is the worker built as a user builds it (go build -o quaero-go-worker .), once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "quaero-go-worker-")
		if err != nil {
			buildErr = err
			return
		}
		builtBinary = filepath.Join(dir, "quaero-go-worker")
		out, err := exec.Command("go", "build", "-o", builtBinary, ".").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v", buildErr)
	}
	return builtBinary
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBinary != "" {
		os.RemoveAll(filepath.Dir(builtBinary))
	}
	os.Exit(code)
}

// process is the built worker started as the plugin starts it: env, stdin, events on fd 3.
type process struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr bytes.Buffer
	rec    *recorder
	read   chan struct{} // closed when the events pipe reached EOF
}

func startBinary(t *testing.T, path string, overrides map[string]string) *process {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	env := testEnv(path, overrides)
	p := &process{cmd: exec.Command(binary(t)), rec: &recorder{}, read: make(chan struct{})}
	for _, name := range []string{"QUAERO_PROTOCOL", "QUAERO_EVENTS_FD", "QUAERO_DB_PATH", "QUAERO_QUEUE_NAME",
		"QUAERO_WORKERS", "QUAERO_WORKER_INDEX_BASE", "QUAERO_POOL_WORKERS", "QUAERO_STAGGER_MS",
		"QUAERO_POLL_INTERVAL_MS", "QUAERO_BUSY_TIMEOUT_MS", "QUAERO_JOURNAL_MODE", "QUAERO_SYNCHRONOUS",
		"QUAERO_CACHE_SIZE_MB", "QUAERO_BEGIN_IMMEDIATE", "QUAERO_RETRY_ATTEMPTS", "QUAERO_RETRY_BACKOFF_MS",
		"QUAERO_DELETE_RETRY_ATTEMPTS", "QUAERO_DELETE_RETRY_BACKOFF_MS", "QUAERO_VISIBILITY_TIMEOUT_MS",
		"QUAERO_MAX_RECEIVE", "QUAERO_JOB_TIME_MS", "QUAERO_SEED", "QUAERO_DISABLED_FIXES"} {
		p.cmd.Env = append(p.cmd.Env, name+"="+env(name))
	}
	p.cmd.ExtraFiles = []*os.File{w} // fd 3 in the child
	p.cmd.Stderr = &p.stderr
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close() // the child holds the write end now: EOF comes when it exits
	go func() {
		io.Copy(p.rec, r)
		r.Close()
		close(p.read)
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	return p
}

func (p *process) start(t *testing.T) {
	t.Helper()
	line, _ := json.Marshal(map[string]any{"command": "start", "at": unixSeconds(time.Now())})
	if _, err := p.stdin.Write(append(line, '\n')); err != nil {
		t.Fatal(err)
	}
}

// wait returns the exit code once the process ended and its events are all read.
func (p *process) wait(t *testing.T) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(45 * time.Second):
		t.Fatal("the worker did not exit")
	}
	<-p.read
	return p.cmd.ProcessState.ExitCode()
}

func TestBinaryRunsTheProtocol(t *testing.T) {
	path := newDatabase(t, "WAL")
	ids := seed(t, path, "R1", 2, 15)
	p := startBinary(t, path, map[string]string{"QUAERO_STAGGER_MS": "20", "QUAERO_JOB_TIME_MS": "0..3"})
	waitUntil(t, "hello", func() bool { return len(p.rec.events(t)) > 0 })
	p.start(t)
	db := openTestDB(t, path, 10000)
	waitUntil(t, "the drain", func() bool {
		return len(only(p.rec.events(t), "job_finished")) >= len(ids) && count(t, db, "select count(*) from goqite") == 0
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, stderr %q", code, p.stderr.String())
	}
	events := p.rec.events(t)
	hello := events[0]
	if hello.str("event") != "hello" || hello.num("protocol") != 1 || hello.str("language") != "go" ||
		hello.str("runtime") != runtime.Version() || hello.num("pid") != float64(p.cmd.Process.Pid) ||
		hello.num("workers") != 2 || !strings.HasPrefix(hello.str("sqlite_version"), "3.") {
		t.Errorf("hello %v", hello)
	}
	libs, _ := hello["libraries"].(map[string]any)
	if libs["maragu.dev/goqite"] != "v0.4.0" || !strings.HasPrefix(libs["modernc.org/sqlite"].(string), "v1.") {
		t.Errorf("hello libraries %v, want goqite v0.4.0 and modernc.org/sqlite v1.x", libs)
	}
	pragmas, _ := hello["pragmas"].(map[string]any)
	if pragmas["journal_mode"] != "wal" || pragmas["synchronous"] != 1.0 || pragmas["busy_timeout"] != 10000.0 {
		t.Errorf("hello pragmas %v, want what the connection runs with", pragmas)
	}
	for i, e := range events[1:] {
		if e.str("event") == "hello" {
			t.Errorf("a second hello at line %d", i+2)
		}
		if _, ok := e["ts"].(float64); !ok {
			t.Errorf("event %v has no ts", e)
		}
	}
	checkDrainedRun(t, events, db, ids, []int{0, 1}, 2, 15)
	if last := events[len(events)-1]; last.str("event") != "worker_stopped" {
		t.Errorf("last event %v, want worker_stopped", last)
	}
}

func TestBinarySIGTERMFinishesTheJobInProgress(t *testing.T) {
	path := newDatabase(t, "WAL")
	ids := seed(t, path, "R1", 1, 3)
	p := startBinary(t, path, map[string]string{"QUAERO_WORKERS": "1", "QUAERO_JOB_TIME_MS": "400..400"})
	p.start(t)
	waitUntil(t, "a claim", func() bool { return len(only(p.rec.events(t), "claimed")) > 0 })
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d, stderr %q", code, p.stderr.String())
	}
	events := p.rec.events(t)
	finished := only(events, "job_finished")
	if len(finished) != 1 || finished[0].str("outcome") != "completed" || finished[0].str("job_id") != ids[0] {
		t.Errorf("finished %v: want the job in progress completed, and no other started", finished)
	}
	if got := only(events, "worker_stopped"); len(got) != 1 {
		t.Errorf("worker_stopped events %v", got)
	}
}

func TestBinarySecondSIGTERMAbandonsTheJob(t *testing.T) {
	path := newDatabase(t, "WAL")
	seed(t, path, "R1", 1, 1)
	p := startBinary(t, path, map[string]string{"QUAERO_WORKERS": "1", "QUAERO_JOB_TIME_MS": "60000..60000"})
	p.start(t)
	waitUntil(t, "a claim", func() bool { return len(only(p.rec.events(t), "claimed")) > 0 })
	// Two signals sent at once may reach the process as one (a pending signal is not queued
	// twice): SIGTERM again until it exits, as a plugin that lost patience would.
	exited := make(chan struct{})
	go func() {
		for {
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	defer close(exited)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d, stderr %q", code, p.stderr.String())
	}
	events := p.rec.events(t)
	if len(only(events, "job_finished")) != 0 || len(only(events, "worker_stopped")) != 1 {
		t.Errorf("events %v: want no job_finished and one worker_stopped", events)
	}
}

// The plugin gave up before the start line: exit 0, the queue never touched.
func TestBinaryEOFBeforeStart(t *testing.T) {
	path := newDatabase(t, "WAL")
	seed(t, path, "R1", 1, 2)
	p := startBinary(t, path, nil)
	p.stdin.Close()
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d, stderr %q", code, p.stderr.String())
	}
	events := p.rec.events(t)
	if len(events) != 1 || events[0].str("event") != "hello" {
		t.Errorf("events %v, want hello alone", events)
	}
	db := openTestDB(t, path, 10000)
	if n := count(t, db, "select count(*) from goqite where received = 0"); n != 2 {
		t.Errorf("%d untouched messages, want 2", n)
	}
}

func TestBinaryBadInputExitsWithAReason(t *testing.T) {
	path := newDatabase(t, "WAL")
	missing, empty := filepath.Join(t.TempDir(), "missing.db"), filepath.Join(t.TempDir(), "empty.db")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env        map[string]string
		stdin      string
		code       int
		stderrHas  string
		wantsHello bool
	}{
		{map[string]string{"QUAERO_PROTOCOL": "2"}, "", 2, "protocol 1 only", false},
		{map[string]string{"QUAERO_DB_PATH": missing}, "", 1, "unable to open database file", false},
		{map[string]string{"QUAERO_DB_PATH": empty}, "", 1, "no goqite and crawl_jobs tables", false},
		{nil, "go\n", 2, "start line", true},
	} {
		p := startBinary(t, path, tc.env)
		io.WriteString(p.stdin, tc.stdin)
		p.stdin.Close()
		code := p.wait(t)
		hello := len(only(p.rec.events(t), "hello")) == 1
		if code != tc.code || !strings.Contains(p.stderr.String(), tc.stderrHas) || hello != tc.wantsHello {
			t.Errorf("%v %q: exit %d, hello %v, stderr %q; want exit %d saying %q", tc.env, tc.stdin, code, hello,
				p.stderr.String(), tc.code, tc.stderrHas)
		}
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the worker created %s (%v): only the plugin makes the database", missing, err)
	}
}
