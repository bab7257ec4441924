// Command quaero-go-worker is pytest-quaero's reference Go worker (external worker protocol
// version 1): Quaero's job workers on maragu.dev/goqite over modernc.org/sqlite, after their
// lock fixes, each fix switchable from the environment.
//
// Exit codes: 0 after a stop (SIGTERM/SIGINT), or when stdin ends before the start line;
// 1 when the database cannot be opened, every worker crashed, or the events pipe broke;
// 2 for a bad environment or start line.
package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Getenv, os.Stdin, os.Stderr))
}

func run(getenv func(string) string, stdin io.Reader, stderr io.Writer) int {
	fail := func(code int, format string, args ...any) int {
		fmt.Fprintf(stderr, "quaero-go-worker: "+format+"\n", args...)
		return code
	}
	cfg, err := LoadConfig(getenv)
	if err != nil {
		return fail(2, "%v", err)
	}
	out := os.NewFile(uintptr(cfg.EventsFD), "quaero-events")
	if out == nil {
		return fail(2, "QUAERO_EVENTS_FD=%d is not a file descriptor", cfg.EventsFD)
	}
	if _, err := out.Stat(); err != nil {
		return fail(2, "QUAERO_EVENTS_FD=%d is not open: %v", cfg.EventsFD, err)
	}
	defer out.Close()

	// Signals are caught from the start: a SIGTERM before the start line ends the process quietly.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	stop := make(chan struct{})
	var stopOnce sync.Once
	stopNow := func() { stopOnce.Do(func() { close(stop) }) }
	abandonCtx, abandon := context.WithCancel(context.Background())
	defer abandon()
	events := NewEvents(out, func(err error) {
		fmt.Fprintf(stderr, "quaero-go-worker: events pipe closed (%v): stopping\n", err)
		stopNow()
	})

	hello, err := sayHello(cfg)
	if err != nil {
		return fail(1, "%s: %v", shownDB(cfg), err)
	}
	events.Emit(hello)

	lines := make(chan startLine, 1)
	go func() { lines <- readStart(stdin) }()
	var start time.Time
	select {
	case <-signals:
		return 0
	case line := <-lines:
		switch {
		case line.eof:
			return 0 // the plugin gave up before starting: the queue was never touched
		case line.err != nil:
			return fail(2, "start line: %v", line.err)
		}
		start = line.at
	}

	go func() {
		<-signals
		stopNow() // finish the job in progress, then stop
		<-signals
		abandon() // asked twice: leave the job in progress to its visibility timeout
	}()
	pool := &Pool{Config: cfg, Events: events, Start: start, Stop: stop, Abandon: abandonCtx}
	crashed := pool.Run()
	select {
	case <-stop:
	default:
		if crashed > 0 { // nobody asked them to stop: every worker ended by an error
			return fail(1, "every worker crashed (see the crashed events)")
		}
	}
	if err := events.Err(); err != nil {
		return 1
	}
	return 0
}

// sayHello opens one connection with the workers' DSN and reads back what it runs with.
func sayHello(cfg Config) (Hello, error) {
	db, err := OpenDB(cfg)
	if err != nil {
		return Hello{}, err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cfg.Backend == BackendPostgreSQL {
		return helloPostgres(ctx, cfg, db)
	}
	pragmas, version, err := ReadPragmas(ctx, db)
	if err != nil {
		return Hello{}, err
	}
	if !tableExists(ctx, db, "goqite") || !tableExists(ctx, db, "crawl_jobs") {
		// The plugin creates both tables (goqite v0.4.0 removed Setup): a bare file means a wrong path.
		return Hello{}, errors.New("no goqite and crawl_jobs tables: the plugin prepares the database before starting the worker")
	}
	return Hello{
		Event: "hello", Protocol: 1, Language: "go", Runtime: runtime.Version(),
		Libraries: libraries(sqliteLibraries), SQLiteVersion: version, PID: os.Getpid(), Workers: cfg.Workers,
		Pragmas: pragmas, WorkerIndexBase: cfg.IndexBase, TxLock: txLock(cfg),
	}, nil
}

// helloPostgres is the hello on PostgreSQL: the session settings the connection runs with
// (lock_timeout, synchronous_commit, isolation, search_path: the run's schema) as its pragmas.
func helloPostgres(ctx context.Context, cfg Config, db *sql.DB) (Hello, error) {
	session, err := ReadSession(ctx, db)
	if err != nil {
		return Hello{}, err
	}
	if !pgTableExists(ctx, db, "goqite") || !pgTableExists(ctx, db, "crawl_jobs") {
		return Hello{}, errors.New("no goqite and crawl_jobs tables on the search_path " + session.SearchPath +
			": the plugin prepares the run's schema before starting the worker")
	}
	return Hello{
		Event: "hello", Protocol: 1, Language: "go", Runtime: runtime.Version(),
		Libraries: libraries(postgresLibraries), PID: os.Getpid(), Workers: cfg.Workers,
		Pragmas: session, WorkerIndexBase: cfg.IndexBase, Backend: BackendPostgreSQL,
		ServerVersion: session.ServerVersion,
	}, nil
}

func tableExists(ctx context.Context, db *sql.DB, name string) bool {
	var n int
	err := db.QueryRowContext(ctx, "select count(*) from sqlite_master where type = 'table' and name = ?", name).Scan(&n)
	return err == nil && n == 1
}

// The modules each backend's hello names.
var (
	sqliteLibraries   = map[string]bool{"maragu.dev/goqite": true, "modernc.org/sqlite": true, "modernc.org/libc": true}
	postgresLibraries = map[string]bool{"maragu.dev/goqite": true, "github.com/jackc/pgx/v5": true}
)

// libraries are the versions of the wanted modules this binary was built with.
func libraries(wanted map[string]bool) map[string]string {
	found := map[string]string{}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return found
	}
	for _, dep := range info.Deps {
		if !wanted[dep.Path] {
			continue
		}
		version := dep.Version
		if dep.Replace != nil {
			version = dep.Replace.Version + " (replaces " + dep.Version + ")"
		}
		found[dep.Path] = version
	}
	return found
}

// shownDB is the database as an error may show it: a PostgreSQL DSN without its password.
func shownDB(cfg Config) string {
	if cfg.Backend != BackendPostgreSQL {
		return cfg.DBPath
	}
	return redactDSN(cfg.DBPath)
}

type startLine struct {
	at  time.Time
	eof bool
	err error
}

// readStart reads the one line the plugin sends: {"command": "start", "at": <unix seconds>}.
func readStart(r io.Reader) startLine {
	text, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && (!errors.Is(err, io.EOF) || text == "") {
		if errors.Is(err, io.EOF) {
			return startLine{eof: true}
		}
		return startLine{err: err}
	}
	var msg struct {
		Command string   `json:"command"`
		At      *float64 `json:"at"`
	}
	if err := json.Unmarshal([]byte(text), &msg); err != nil {
		return startLine{err: fmt.Errorf("%q is not JSON: %v", text, err)}
	}
	if msg.Command != "start" || msg.At == nil {
		return startLine{err: fmt.Errorf(`%q: want {"command": "start", "at": <unix seconds>}`, text)}
	}
	return startLine{at: time.UnixMicro(int64(*msg.At * 1e6))}
}
