package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// ClipUTF8 returns s as valid UTF-8 (invalid bytes become U+FFFD) of at
// most max bytes, cut at a character boundary.
func ClipUTF8(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// Clock is the agent's source of time; tests inject a fake.
type Clock interface {
	Now() time.Time
	// After is time.After.
	After(d time.Duration) <-chan time.Time
}

// RealClock is the wall clock.
type RealClock struct{}

// Now is time.Now.
func (RealClock) Now() time.Time { return time.Now() }

// After is time.After.
func (RealClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Logger writes structured lines: text ("2026-01-02T15:04:05Z INFO msg k=v
// k2="v 2"") or JSON objects ({"time":..,"level":..,"msg":..,"k":"v"}).
// Every value is clipped to valid UTF-8 of at most 1024 bytes. Safe for
// concurrent use.
type Logger struct {
	mu    sync.Mutex
	w     io.Writer
	json  bool
	clock Clock
}

// NewLogger writes to w in format "text" or "json".
func NewLogger(w io.Writer, format string, clock Clock) *Logger {
	return &Logger{w: w, json: format == "json", clock: clock}
}

// Info logs msg with key/value pairs.
func (l *Logger) Info(msg string, kv ...interface{}) { l.log("INFO", msg, kv) }

// Warn logs msg with key/value pairs.
func (l *Logger) Warn(msg string, kv ...interface{}) { l.log("WARN", msg, kv) }

// Error logs msg with key/value pairs.
func (l *Logger) Error(msg string, kv ...interface{}) { l.log("ERROR", msg, kv) }

func (l *Logger) log(level, msg string, kv []interface{}) {
	if l == nil {
		return
	}
	ts := l.clock.Now().UTC().Format(time.RFC3339Nano)
	var b strings.Builder
	if l.json {
		fields := []string{jsonField("time", ts), jsonField("level", level), jsonField("msg", msg)}
		for i := 0; i+1 < len(kv); i += 2 {
			fields = append(fields, jsonField(fmt.Sprint(kv[i]), logValue(kv[i+1])))
		}
		b.WriteString("{" + strings.Join(fields, ",") + "}\n")
	} else {
		b.WriteString(ts + " " + level + " " + ClipUTF8(msg, 1024))
		for i := 0; i+1 < len(kv); i += 2 {
			v := logValue(kv[i+1])
			if v == "" || strings.ContainsAny(v, " \t\n\"=") {
				v = fmt.Sprintf("%q", v)
			}
			b.WriteString(" " + fmt.Sprint(kv[i]) + "=" + v)
		}
		b.WriteString("\n")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	io.WriteString(l.w, b.String())
}

func logValue(v interface{}) string {
	switch t := v.(type) {
	case error:
		return ClipUTF8(t.Error(), 1024)
	case []string:
		return ClipUTF8(strings.Join(t, ","), 1024)
	default:
		return ClipUTF8(fmt.Sprint(v), 1024)
	}
}

func jsonField(k, v string) string {
	kb, _ := json.Marshal(ClipUTF8(k, 128))
	vb, _ := json.Marshal(v)
	return string(kb) + ":" + string(vb)
}

// Backoff is exponential backoff with full jitter: the n-th delay (from 0)
// is uniform in [0, min(Cap, Base*2^n)]. Not safe for concurrent use.
type Backoff struct {
	Base, Cap time.Duration
	Rand      *rand.Rand
	n         int
}

// Next returns the next delay and advances.
func (b *Backoff) Next() time.Duration {
	bound := b.Cap
	if b.n < 40 && b.Base<<uint(b.n) < b.Cap {
		bound = b.Base << uint(b.n)
	}
	b.n++
	return time.Duration(b.Rand.Int63n(int64(bound) + 1))
}

// Reset starts over from Base.
func (b *Backoff) Reset() { b.n = 0 }

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
