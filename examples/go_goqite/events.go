package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sync"
	"time"
)

// Events writes the protocol's JSON lines. One mutex around marshal-and-write, and one
// Write call per line, so lines from concurrent workers never interleave.
type Events struct {
	mu     sync.Mutex
	w      io.Writer
	err    error
	broken func(error) // called once, on the first failed write (the plugin went away)
}

// NewEvents writes to w; broken (may be nil) hears about the first write error.
func NewEvents(w io.Writer, broken func(error)) *Events {
	return &Events{w: w, broken: broken}
}

// Emit writes one event. After a failed write every later event is dropped: a half-written
// stream is worse than a short one.
func (e *Events) Emit(event any) {
	line, err := json.Marshal(event)
	if err != nil {
		panic(fmt.Sprintf("event %T cannot be encoded: %v", event, err)) // a bug in this file's types
	}
	line = append(line, '\n')
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return
	}
	if _, err := e.w.Write(line); err != nil {
		e.err = err
		if e.broken != nil {
			go e.broken(err) // not under the lock: the callback may stop workers that emit
		}
	}
}

// Err is the first write error, if any.
func (e *Events) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// unixSeconds is the protocol's time: unix seconds as a float, microsecond precision.
func unixSeconds(t time.Time) float64 {
	return float64(t.UnixMicro()) / 1e6
}

// millis rounds a duration to microseconds, in float milliseconds.
func millis(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

// Head is what every event but hello starts with.
type Head struct {
	Event  string  `json:"event"`
	TS     float64 `json:"ts"`
	Worker int     `json:"worker"`
}

func head(event string, worker int) Head {
	return Head{Event: event, TS: unixSeconds(time.Now()), Worker: worker}
}

// Hello is the first line: who this worker is and what its connections really run with.
type Hello struct {
	Event         string            `json:"event"`
	Protocol      int               `json:"protocol"`
	Language      string            `json:"language"`
	Runtime       string            `json:"runtime"`
	Libraries     map[string]string `json:"libraries"`
	SQLiteVersion string            `json:"sqlite_version,omitempty"`
	PID           int               `json:"pid"`
	Workers       int               `json:"workers"`
	// Pragmas on SQLite; on PostgreSQL the session settings (PgSession), read back the same way
	Pragmas any `json:"pragmas"`
	// extra keys (allowed by the protocol): the settings this process runs with
	WorkerIndexBase int    `json:"worker_index_base"`
	TxLock          string `json:"txlock,omitempty"`
	// PostgreSQL only (empty, and so absent, on SQLite: its hello stays as it was)
	Backend       string `json:"backend,omitempty"`
	ServerVersion string `json:"server_version,omitempty"`
}

// Pragmas as PRAGMA returns them (journal_mode lower case, synchronous as its number).
type Pragmas struct {
	JournalMode string `json:"journal_mode"`
	Synchronous int    `json:"synchronous"`
	BusyTimeout int    `json:"busy_timeout"`
	CacheSize   int    `json:"cache_size"`
}

// Claimed is a received message.
type Claimed struct {
	Head
	MessageID string `json:"message_id"`
	JobID     string `json:"job_id"`
	Delivery  int    `json:"delivery"`
}

// JobFinished ends a claim; Error only for the failed and error outcomes.
type JobFinished struct {
	Head
	MessageID  string   `json:"message_id"`
	JobID      string   `json:"job_id"`
	Outcome    string   `json:"outcome"`
	DurationMS float64  `json:"duration_ms"`
	LatencyMS  *float64 `json:"latency_ms,omitempty"`
	Error      string   `json:"error,omitempty"`
}

// LockError is one SQLITE_BUSY / SQLITE_LOCKED (any extended code), or on PostgreSQL one
// lock SQLSTATE (Code then as the plugin files it, "40001 serialization_failure").
type LockError struct {
	Head
	Operation  string  `json:"operation"`
	Code       string  `json:"code"`
	ResultCode int     `json:"result_code,omitempty"` // SQLite's extended code (never 0 there)
	Attempt    int     `json:"attempt"`
	Retried    bool    `json:"retried"`
	WaitedMS   float64 `json:"waited_ms"`
	SQLState   string  `json:"sqlstate,omitempty"` // PostgreSQL's five characters
}

// Operation is one finished operation: ok, exhausted (lock errors used every attempt) or error.
type Operation struct {
	Head
	Operation string `json:"operation"`
	Attempts  int    `json:"attempts"`
	Outcome   string `json:"outcome"`
	Empty     bool   `json:"empty,omitempty"` // extra key: a receive that found nothing (a poll)
}

// ErrorEvent is a non-lock error the worker survived.
type ErrorEvent struct {
	Head
	Operation string `json:"operation"`
	Message   string `json:"message"`
}

// Crashed is a worker ended by an error; Origin is file:line where it was detected.
type Crashed struct {
	Head
	Message string `json:"message"`
	Origin  string `json:"origin"`
}

// WorkerStopped ends every worker, whether it ran, crashed or was stopped during its stagger.
type WorkerStopped struct {
	Head
	BusyMS float64 `json:"busy_ms"`
}
