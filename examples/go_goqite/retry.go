package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"modernc.org/sqlite"
)

// SQLite's primary result codes for the two lock families; the extended codes carry the
// primary one in their low byte (modernc turns extended result codes on for every connection).
const (
	sqliteBusy   = 5
	sqliteLocked = 6
)

// extendedNames are SQLite's own names for the lock family's extended result codes.
var extendedNames = map[int]string{
	5:   "SQLITE_BUSY",
	261: "SQLITE_BUSY_RECOVERY",
	517: "SQLITE_BUSY_SNAPSHOT",
	773: "SQLITE_BUSY_TIMEOUT",
	6:   "SQLITE_LOCKED",
	262: "SQLITE_LOCKED_SHAREDCACHE",
	518: "SQLITE_LOCKED_VTAB",
}

// CodeName is SQLite's name for an extended result code of the lock families.
func CodeName(code int) string {
	if name, ok := extendedNames[code]; ok {
		return name
	}
	return fmt.Sprintf("SQLITE_%d", code) // an extended code newer than this table
}

// LockCode is the extended result code when err is (or wraps) a SQLITE_BUSY or SQLITE_LOCKED
// error of the modernc driver. Told apart by the code, never by the message text.
func LockCode(err error) (int, bool) {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return 0, false
	}
	switch e.Code() & 0xff {
	case sqliteBusy, sqliteLocked:
		return e.Code(), true
	}
	return 0, false
}

// Retrier runs one worker's operations: each lock error is reported as a lock_error event and
// retried with a doubling backoff until the policy's attempts are used; every operation ends
// with one operation event. Anything but a lock error is returned at once.
type Retrier struct {
	Events *Events
	Worker int
	// Sleep waits d or until ctx is done (false then); tests record the delays instead.
	Sleep func(ctx context.Context, d time.Duration) bool
}

// ErrAbandoned is returned when the context ended (a second SIGTERM) between attempts.
var ErrAbandoned = errors.New("abandoned: the worker was told to stop at once")

// Do runs fn under policy as operation op; fn gets the context to pass to the database.
// A returned error that classifyLock recognises is a lock error that used every attempt.
func (r *Retrier) Do(ctx context.Context, op string, policy Policy, fn func(context.Context) error) error {
	return r.do(ctx, op, policy, func(ctx context.Context) (bool, error) { return false, fn(ctx) })
}

// DoEmpty is Do for a receive: fn also says whether it found nothing, marked on the operation event.
func (r *Retrier) DoEmpty(ctx context.Context, op string, policy Policy, fn func(context.Context) (bool, error)) error {
	return r.do(ctx, op, policy, fn)
}

func (r *Retrier) do(ctx context.Context, op string, policy Policy, fn func(context.Context) (bool, error)) error {
	attempts := max(1, policy.Attempts)
	delay := policy.Backoff
	for attempt := 1; ; attempt++ {
		started := time.Now()
		empty, err := fn(ctx)
		if err == nil {
			r.Events.Emit(Operation{Head: head("operation", r.Worker), Operation: op, Attempts: attempt, Outcome: "ok", Empty: empty})
			return nil
		}
		if ctx.Err() != nil {
			return ErrAbandoned // cut short on purpose: neither a lock error nor a failure to report
		}
		lock, isLock := classifyLock(err)
		if !isLock {
			r.Events.Emit(Operation{Head: head("operation", r.Worker), Operation: op, Attempts: attempt, Outcome: "error"})
			return err
		}
		retried := attempt < attempts
		r.Events.Emit(LockError{
			Head: head("lock_error", r.Worker), Operation: op, Code: lock.name, ResultCode: lock.resultCode,
			Attempt: attempt, Retried: retried, WaitedMS: millis(time.Since(started)), SQLState: lock.sqlstate,
		})
		if !retried {
			r.Events.Emit(Operation{Head: head("operation", r.Worker), Operation: op, Attempts: attempt, Outcome: "exhausted"})
			return err
		}
		if !r.sleep(ctx, delay) {
			return ErrAbandoned
		}
		delay *= 2
	}
}

func (r *Retrier) sleep(ctx context.Context, d time.Duration) bool {
	if r.Sleep != nil {
		return r.Sleep(ctx, d)
	}
	return sleepCtx(ctx, d)
}

// sleepCtx waits d, or returns false as soon as ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
