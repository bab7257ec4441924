package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Policy is how often a lock error is retried and how long to wait first (doubled per retry).
type Policy struct {
	Attempts int
	Backoff  time.Duration
}

// Config is everything the plugin passes in QUAERO_* variables (protocol version 1).
type Config struct {
	// Backend is QUAERO_BACKEND: "sqlite" (DBPath is the file) or "postgresql" (DBPath is the
	// run's DSN, its own schema on the search_path)
	Backend           string
	EventsFD          int
	DBPath            string
	Queue             string
	Workers           int
	IndexBase         int
	PoolWorkers       int
	Stagger           time.Duration
	PollInterval      time.Duration
	BusyTimeoutMS     int
	JournalMode       string
	Synchronous       string
	CacheSizeMB       int
	BeginImmediate    bool
	Retry             Policy
	DeleteRetry       Policy
	VisibilityTimeout time.Duration
	MaxReceive        int
	JobTimeLow        time.Duration
	JobTimeHigh       time.Duration
	Seed              int64
	DisabledFixes     []string
	// ShippedReceive (QUAERO_GOQITE_RECEIVE=goqite, not a protocol variable): on PostgreSQL,
	// claim with goqite v0.4.0's own ReceiveTx under SERIALIZABLE instead of its statement with
	// goqite PR #72's FOR UPDATE SKIP LOCKED; SQLite always uses goqite's own
	ShippedReceive bool
}

// defaults are the load-test template's values (Quaero after its lock fixes), used for a
// variable the plugin did not pass; the plugin passes them all, so they matter only when
// the worker is started by hand.
var defaults = map[string]string{
	"QUAERO_QUEUE_NAME":              "quaero_jobs",
	"QUAERO_WORKERS":                 "2",
	"QUAERO_WORKER_INDEX_BASE":       "0",
	"QUAERO_STAGGER_MS":              "500",
	"QUAERO_POLL_INTERVAL_MS":        "1000",
	"QUAERO_BUSY_TIMEOUT_MS":         "10000",
	"QUAERO_JOURNAL_MODE":            "WAL",
	"QUAERO_SYNCHRONOUS":             "NORMAL",
	"QUAERO_CACHE_SIZE_MB":           "64",
	"QUAERO_BEGIN_IMMEDIATE":         "true",
	"QUAERO_RETRY_ATTEMPTS":          "5",
	"QUAERO_RETRY_BACKOFF_MS":        "100",
	"QUAERO_DELETE_RETRY_ATTEMPTS":   "3",
	"QUAERO_DELETE_RETRY_BACKOFF_MS": "200",
	"QUAERO_VISIBILITY_TIMEOUT_MS":   "300000",
	"QUAERO_MAX_RECEIVE":             "3",
	"QUAERO_JOB_TIME_MS":             "5..20",
	"QUAERO_SEED":                    "0",
}

// LoadConfig reads the protocol's variables through getenv (os.Getenv, or a map in tests).
// The first bad value is returned as an error naming the variable and what it must be.
func LoadConfig(getenv func(string) string) (Config, error) {
	p := &parser{getenv: getenv}
	if v := getenv("QUAERO_PROTOCOL"); v != "1" {
		if v == "" {
			return Config{}, fmt.Errorf("QUAERO_PROTOCOL is not set: this worker is started by pytest-quaero (protocol 1)")
		}
		return Config{}, fmt.Errorf("QUAERO_PROTOCOL=%q: this worker speaks protocol 1 only", v)
	}
	c := Config{
		Backend:           p.backend("QUAERO_BACKEND"),
		EventsFD:          p.intMin("QUAERO_EVENTS_FD", 0),
		DBPath:            p.required("QUAERO_DB_PATH"),
		Queue:             p.required("QUAERO_QUEUE_NAME"),
		Workers:           p.intMin("QUAERO_WORKERS", 1),
		IndexBase:         p.intMin("QUAERO_WORKER_INDEX_BASE", 0),
		Stagger:           p.millis("QUAERO_STAGGER_MS"),
		PollInterval:      p.millis("QUAERO_POLL_INTERVAL_MS"),
		BusyTimeoutMS:     p.intMin("QUAERO_BUSY_TIMEOUT_MS", 0),
		JournalMode:       p.choice("QUAERO_JOURNAL_MODE", "WAL", "DELETE"),
		Synchronous:       p.choice("QUAERO_SYNCHRONOUS", "OFF", "NORMAL", "FULL", "EXTRA"),
		CacheSizeMB:       p.intMin("QUAERO_CACHE_SIZE_MB", 0),
		BeginImmediate:    p.boolean("QUAERO_BEGIN_IMMEDIATE"),
		Retry:             Policy{p.intMin("QUAERO_RETRY_ATTEMPTS", 1), p.millis("QUAERO_RETRY_BACKOFF_MS")},
		DeleteRetry:       Policy{p.intMin("QUAERO_DELETE_RETRY_ATTEMPTS", 1), p.millis("QUAERO_DELETE_RETRY_BACKOFF_MS")},
		VisibilityTimeout: p.millis("QUAERO_VISIBILITY_TIMEOUT_MS"),
		MaxReceive:        p.intMin("QUAERO_MAX_RECEIVE", 1),
		Seed:              p.int64("QUAERO_SEED"),
	}
	c.JobTimeLow, c.JobTimeHigh = p.msRange("QUAERO_JOB_TIME_MS")
	switch v := strings.ToLower(strings.TrimSpace(getenv("QUAERO_GOQITE_RECEIVE"))); v {
	case "", "skip-locked":
	case "goqite":
		c.ShippedReceive = true
	default:
		p.fail("QUAERO_GOQITE_RECEIVE", v, "want skip-locked or goqite")
	}
	c.PoolWorkers = c.IndexBase + c.Workers
	if getenv("QUAERO_POOL_WORKERS") != "" {
		c.PoolWorkers = p.intMin("QUAERO_POOL_WORKERS", c.IndexBase+c.Workers)
	}
	for _, fix := range strings.Split(getenv("QUAERO_DISABLED_FIXES"), ",") {
		if fix = strings.TrimSpace(fix); fix != "" {
			c.DisabledFixes = append(c.DisabledFixes, fix)
		}
	}
	if p.err == nil && c.VisibilityTimeout <= 0 {
		// goqite would silently use 5 s for 0
		p.err = fmt.Errorf("QUAERO_VISIBILITY_TIMEOUT_MS must be > 0")
	}
	return c, p.err
}

// parser keeps the first error, so LoadConfig reads as a list of fields.
type parser struct {
	getenv func(string) string
	err    error
}

func (p *parser) get(name string) string {
	if v := strings.TrimSpace(p.getenv(name)); v != "" {
		return v
	}
	return defaults[name]
}

func (p *parser) fail(name, value, want string) {
	if p.err == nil {
		p.err = fmt.Errorf("%s=%q: %s", name, value, want)
	}
}

func (p *parser) required(name string) string {
	v := p.get(name)
	if v == "" {
		p.fail(name, v, "required")
	}
	return v
}

func (p *parser) intMin(name string, low int) int {
	v := p.required(name)
	n, err := strconv.Atoi(v)
	if err != nil || n < low {
		p.fail(name, v, fmt.Sprintf("want an integer >= %d", low))
	}
	return n
}

func (p *parser) int64(name string) int64 {
	v := p.get(name)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		p.fail(name, v, "want an integer")
	}
	return n
}

// ms parses float milliseconds (the plugin writes e.g. "500.0").
func ms(v string) (time.Duration, bool) {
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return time.Duration(f * float64(time.Millisecond)), true
}

func (p *parser) millis(name string) time.Duration {
	v := p.required(name)
	d, ok := ms(v)
	if !ok {
		p.fail(name, v, "want milliseconds >= 0")
	}
	return d
}

func (p *parser) msRange(name string) (time.Duration, time.Duration) {
	v := p.required(name)
	lowText, highText, found := strings.Cut(v, "..")
	low, ok1 := ms(lowText)
	high, ok2 := ms(highText)
	if !found || !ok1 || !ok2 || high < low {
		p.fail(name, v, "want low..high in milliseconds, low <= high")
	}
	return low, high
}

func (p *parser) choice(name string, allowed ...string) string {
	v := strings.ToUpper(p.required(name))
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	p.fail(name, v, "want one of "+strings.Join(allowed, ", "))
	return v
}

// The backends QUAERO_BACKEND names.
const (
	BackendSQLite     = "sqlite"
	BackendPostgreSQL = "postgresql"
)

// backend is QUAERO_BACKEND; unset (a plugin from before the PostgreSQL backend) is SQLite.
func (p *parser) backend(name string) string {
	switch v := strings.ToLower(strings.TrimSpace(p.getenv(name))); v {
	case "", BackendSQLite:
		return BackendSQLite
	case BackendPostgreSQL:
		return v
	default:
		p.fail(name, v, "want sqlite or postgresql")
		return v
	}
}

func (p *parser) boolean(name string) bool {
	v := p.required(name)
	switch strings.ToLower(v) {
	case "true", "1", "yes", "on":
		return true
	case "false", "0", "no", "off":
		return false
	}
	p.fail(name, v, "want true or false")
	return false
}
