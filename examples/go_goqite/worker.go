package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"maragu.dev/goqite"
)

// Pool is this process's workers: pool indexes IndexBase .. IndexBase+Workers-1.
type Pool struct {
	Config Config
	Events *Events
	// Start is the start line's "at": worker k begins at Start + k*Stagger.
	Start time.Time
	// Stop (closed on the first SIGTERM) ends each loop after the job in progress.
	Stop <-chan struct{}
	// Abandon (cancelled on a second SIGTERM) cuts the job in progress short: its database
	// calls, retry waits and simulated work end at once, and its message comes back after
	// the visibility timeout.
	Abandon context.Context
}

// Run runs every worker until each has stopped; it returns how many crashed.
func (p *Pool) Run() int {
	var wg sync.WaitGroup
	crashed := make([]bool, p.Config.Workers)
	for local := range p.Config.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &worker{pool: p, index: p.Config.IndexBase + local}
			w.retrier = &Retrier{Events: p.Events, Worker: w.index}
			crashed[local] = w.run()
		}()
	}
	wg.Wait()
	n := 0
	for _, c := range crashed {
		if c {
			n++
		}
	}
	return n
}

type worker struct {
	pool    *Pool
	index   int
	retrier *Retrier
	db      *sql.DB
	queue   *goqite.Queue
	busy    time.Duration
}

// run is one worker's life, Quaero's: wait the stagger, open, then receive/process/delete.
// It reports true when an error ended it.
func (w *worker) run() (crashed bool) {
	cfg, ev := w.pool.Config, w.pool.Events
	defer func() { // registered first, so it runs last: worker_stopped closes every worker
		ev.Emit(WorkerStopped{Head: head("worker_stopped", w.index), BusyMS: millis(w.busy)})
	}()
	defer func() {
		if r := recover(); r != nil {
			w.crash(fmt.Sprintf("panic: %v", r), panicOrigin())
			crashed = true
		}
	}()
	defer func() {
		if w.db != nil {
			w.db.Close()
		}
	}()
	if !w.wait(time.Until(w.pool.Start.Add(time.Duration(w.index) * cfg.Stagger))) {
		return false // stopped during its stagger: it never touched the queue
	}
	ctx := w.pool.Abandon
	db, err := OpenDB(cfg)
	if err != nil {
		w.crash("could not open the database: "+err.Error(), here())
		return true
	}
	w.db = db
	// Opening runs the DSN's PRAGMAs, which read the schema and so can meet a lock in
	// rollback-journal mode: retried and counted. A lock error that escapes is what a Go
	// service sees as a failed call (database/sql opens connections on demand): the worker
	// tries again after a poll interval instead of dying. Any other error ends it.
	for {
		err := w.retrier.Do(ctx, "connect", cfg.Retry, db.PingContext)
		if err == nil {
			break
		}
		if errors.Is(err, ErrAbandoned) {
			return false
		}
		if _, isLock := classifyLock(err); !isLock {
			ev.Emit(ErrorEvent{Head: head("error", w.index), Operation: "connect", Message: describe(err)})
			w.crash("could not open its connection: "+describe(err), here())
			return true
		}
		if !w.wait(cfg.PollInterval) {
			return false
		}
	}
	flavor := goqite.SQLFlavorSQLite
	if cfg.Backend == BackendPostgreSQL {
		flavor = goqite.SQLFlavorPostgreSQL
	}
	w.queue = goqite.New(goqite.NewOpts{
		DB: db, Name: cfg.Queue, MaxReceive: cfg.MaxReceive, Timeout: cfg.VisibilityTimeout, SQLFlavor: flavor,
	})
	ev.Emit(head("worker_started", w.index))
	for !w.stopping() {
		msg, delivery, err := w.receive(ctx)
		switch {
		case errors.Is(err, ErrAbandoned):
			return false
		case err != nil:
			if _, isLock := classifyLock(err); !isLock {
				if !isDatabaseError(err) {
					w.crash("receive: "+err.Error(), here()) // the queue itself broke
					return true
				}
				ev.Emit(ErrorEvent{Head: head("error", w.index), Operation: "queue_receive", Message: describe(err)})
			}
			// an escaped lock error was reported as lock_error (retried false): poll again later
			w.wait(cfg.PollInterval)
		case msg == nil:
			w.wait(cfg.PollInterval)
		default:
			started := time.Now()
			w.process(ctx, msg, delivery, started)
			w.busy += time.Since(started)
		}
	}
	return false
}

// receive is goqite's Receive (its own transaction around ReceiveTx) plus a read of the
// message's received count inside that transaction: the protocol's delivery number, which
// goqite v0.4.0 does not return. Retried like the built-in worker's receive. On PostgreSQL
// it is ReceivePG (goqite's claim with PR #72's SKIP LOCKED) unless QUAERO_GOQITE_RECEIVE=goqite.
func (w *worker) receive(ctx context.Context) (*goqite.Message, int, error) {
	var msg *goqite.Message
	var delivery int
	cfg := w.pool.Config
	err := w.retrier.DoEmpty(ctx, "queue_receive", cfg.Retry, func(ctx context.Context) (bool, error) {
		msg, delivery = nil, 0
		if cfg.Backend == BackendPostgreSQL && !cfg.ShippedReceive {
			m, received, err := ReceivePG(ctx, w.db, cfg)
			msg, delivery = m, received
			return m == nil && err == nil, err
		}
		tx, err := w.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable}) // as goqite's Receive
		if err != nil {
			return false, err
		}
		defer tx.Rollback() //nolint:errcheck // a no-op after Commit
		m, err := w.queue.ReceiveTx(ctx, tx)
		if err != nil {
			return false, err
		}
		if m != nil {
			query := receivedSQL
			if w.pool.Config.Backend == BackendPostgreSQL {
				query = pgReceivedSQL
			}
			if err := tx.QueryRowContext(ctx, query, string(m.ID)).Scan(&delivery); err != nil {
				return false, err
			}
		}
		if err := tx.Commit(); err != nil {
			return false, err
		}
		msg = m
		return m == nil, nil
	})
	return msg, delivery, err
}

// body is the message a producer wrote (pytest_quaero/core/jobs.py encode_job).
type body struct {
	ID        string  `json:"id"`
	Type      string  `json:"type"`
	ParentID  string  `json:"parent_id"`
	URL       string  `json:"url"`
	CreatedAt float64 `json:"created_at"`
}

// process runs one job: mark running, simulated work, finish the child and its parent's
// counters, delete the message. A step whose error escaped leaves the message for redelivery.
func (w *worker) process(ctx context.Context, msg *goqite.Message, delivery int, claimed time.Time) {
	cfg, ev := w.pool.Config, w.pool.Events
	var job body
	decodeErr := json.Unmarshal(msg.Body, &job)
	if decodeErr == nil && job.ID == "" {
		decodeErr = errors.New(`no "id"`)
	}
	ev.Emit(Claimed{Head: head("claimed", w.index), MessageID: string(msg.ID), JobID: job.ID, Delivery: delivery})
	finished := func(outcome, errText string) {
		f := JobFinished{
			Head: head("job_finished", w.index), MessageID: string(msg.ID), JobID: job.ID,
			Outcome: outcome, DurationMS: millis(time.Since(claimed)), Error: errText,
		}
		if job.CreatedAt > 0 {
			latency := max(0, millis(claimed.Sub(time.UnixMicro(int64(job.CreatedAt*1e6)))))
			f.LatencyMS = &latency
		}
		ev.Emit(f)
	}
	if decodeErr != nil {
		finished("error", "undecodable message body: "+decodeErr.Error())
		return
	}
	if err := w.retrier.Do(ctx, "save_job", cfg.Retry, func(ctx context.Context) error {
		if cfg.Backend == BackendPostgreSQL {
			return MarkRunningPG(ctx, w.db, job.ID)
		}
		return MarkRunning(ctx, w.db, job.ID)
	}); err != nil {
		if !errors.Is(err, ErrAbandoned) {
			finished("error", "save_job: "+describe(err))
		}
		return
	}
	if !sleepCtx(ctx, WorkTime(cfg.Seed, job.ID, cfg.JobTimeLow, cfg.JobTimeHigh)) {
		return // abandoned mid-work: not finished, the message comes back after the visibility timeout
	}
	var counted bool
	if err := w.retrier.Do(ctx, "progress_update", cfg.Retry, func(ctx context.Context) error {
		var err error
		if cfg.Backend == BackendPostgreSQL {
			counted, err = FinishChildPG(ctx, w.db, job.ID, job.ParentID, false, "")
		} else {
			counted, err = FinishChild(ctx, w.db, job.ID, job.ParentID, false, "")
		}
		return err
	}); err != nil {
		if !errors.Is(err, ErrAbandoned) {
			finished("error", "progress_update: "+describe(err))
		}
		return
	}
	if err := w.retrier.Do(ctx, "queue_delete", cfg.DeleteRetry, func(ctx context.Context) error {
		return w.queue.Delete(ctx, msg.ID)
	}); err != nil {
		if !errors.Is(err, ErrAbandoned) {
			finished("error", "queue_delete: "+describe(err))
		}
		return
	}
	if counted {
		finished("completed", "")
	} else {
		finished("duplicate", "")
	}
}

// WorkTime is the simulated work of one job: uniform in [low, high], the same for a job id
// and seed whichever worker (or rerun) gets it.
func WorkTime(seed int64, jobID string, low, high time.Duration) time.Duration {
	if high <= low {
		return low
	}
	h := fnv.New64a()
	h.Write([]byte(jobID))
	r := rand.New(rand.NewPCG(uint64(seed), h.Sum64()))
	return low + time.Duration(r.Float64()*float64(high-low))
}

func (w *worker) stopping() bool {
	select {
	case <-w.pool.Stop:
		return true
	default:
		return false
	}
}

// wait sleeps d unless stopped first; false when stopped.
func (w *worker) wait(d time.Duration) bool {
	if d <= 0 {
		return !w.stopping()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.pool.Stop:
		return false
	}
}

func (w *worker) crash(message, origin string) {
	w.pool.Events.Emit(Crashed{Head: head("crashed", w.index), Message: message, Origin: origin})
}

// describe names a lock error by its code, as the events do: "SQLITE_BUSY: database is locked (5)".
func describe(err error) string {
	if lock, ok := classifyLock(err); ok {
		return lock.name + ": " + err.Error()
	}
	return err.Error()
}

// isDatabaseError: the database answered with an error (SQLite's result code, PostgreSQL's
// SQLSTATE), as opposed to the queue code or the driver failing.
func isDatabaseError(err error) bool {
	var code interface{ Code() int }
	return errors.As(err, &code) || isPostgreSQLError(err)
}

// here is the caller's file:line, the crashed event's origin.
func here() string {
	_, file, line, _ := runtime.Caller(1)
	return fmt.Sprintf("%s:%d", filepath.Base(file), line)
}

// panicOrigin is where the panic being recovered was raised: the first frame below the runtime's.
func panicOrigin() string {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	for {
		f, more := frames.Next()
		if !strings.HasPrefix(f.Function, "runtime.") {
			return fmt.Sprintf("%s:%d", filepath.Base(f.File), f.Line)
		}
		if !more {
			return "unknown"
		}
	}
}
