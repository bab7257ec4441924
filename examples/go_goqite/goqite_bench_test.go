package main

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"

	"maragu.dev/goqite"
)

// BenchmarkGoqiteSendReceiveDelete is goqite v0.4.0's own "send, receive, delete" benchmark
// (goqite_test.go: b.RunParallel of Send, Receive, Delete), on its test database settings (WAL,
// 5 s busy timeout) with this module's driver. goqite's copy cannot run at v0.4.0: its NewQ is
// called without a database and panics ("db cannot be nil"). Run twice: with SQLite's default
// synchronous=FULL, as goqite's tests leave it, and with NORMAL, as the plugin sets it.
func BenchmarkGoqiteSendReceiveDelete(b *testing.B) {
	for _, synchronous := range []string{"FULL", "NORMAL"} {
		b.Run("synchronous="+synchronous, func(b *testing.B) { benchmarkLoop(b, synchronous) })
	}
}

func benchmarkLoop(b *testing.B, synchronous string) {
	path := filepath.Join(b.TempDir(), "bench.db")
	db, err := sql.Open("sqlite", fmt.Sprintf("file:%s?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)"+
		"&_pragma=synchronous(%s)&_txlock=immediate", path, synchronous))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(pluginSchema); err != nil {
		b.Fatal(err)
	}
	q := goqite.New(goqite.NewOpts{DB: db, Name: "test"})
	ctx := context.Background()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := q.Send(ctx, goqite.Message{Body: []byte("yo")}); err != nil {
				b.Error(err)
				return
			}
			m, err := q.Receive(ctx)
			if err != nil || m == nil {
				b.Errorf("receive: %v, %v", m, err)
				return
			}
			if err := q.Delete(ctx, m.ID); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
