package web_test

// Browser tests: the pages in a real headless Chromium, calling through
// icebox's own STUN and TURN servers on 127.0.0.1. They skip only where no
// Chromium is installed and CI is unset; .ci/run installs it, so CI always
// runs them.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"icebox/internal/testenv"
)

// newBrowser starts headless Chromium with shared/BROWSER-TESTS.md's
// switches, which keep all its traffic on loopback, and returns the context
// of its first tab. Switches named in without are left out, to find out
// which ones a call needs.
//
// Chromium checks the certificate of a turns: server like a web site's:
// with r's self-signed one, TURN over TLS fails (701) unless it is
// trusted. --ignore-certificate-errors-spki-list trusts that one key and
// nothing else (Chromium honours it only with --user-data-dir, which is
// set); plain --ignore-certificate-errors works too but trusts anything.
func newBrowser(t *testing.T, r *relay, without ...string) context.Context {
	t.Helper()
	opts := append(testenv.ChromiumOptions(t),
		chromedp.WindowSize(900, 1000),
		chromedp.Flag("ignore-certificate-errors-spki-list", r.spki),
	)
	for _, name := range without {
		opts = append(opts, chromedp.Flag(name, false)) // false removes it
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting Chromium: %v", err)
	}
	return ctx
}

// tab is one browser tab, with the page's console kept for the test log
// and its uncaught exceptions counted as failures.
type tab struct {
	name string
	ctx  context.Context
	mu   sync.Mutex
	logs []string
	errs []string
}

func newTab(t *testing.T, parent context.Context, name string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(parent)
	tb := &tab{name: name, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("opening tab %s: %v", name, err)
	}
	msgs := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			tb.mu.Lock()
			tb.logs = append(tb.logs, m.String())
			if m.IsException() {
				tb.errs = append(tb.errs, m.String())
			}
			tb.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		tb.mu.Lock()
		defer tb.mu.Unlock()
		if t.Failed() {
			for _, l := range tb.logs {
				t.Logf("%s console: %s", name, l)
			}
		}
		for _, e := range tb.errs {
			t.Errorf("%s: uncaught exception: %s", name, e)
		}
	})
	return tb
}

// pollSlack stretches poll's limits: on a loaded machine (CI, or several
// test runs sharing two cores) Chromium took over 10 s for what takes one
// when idle, and a passing test never waits for the limit anyway.
const pollSlack = 3

func (tb *tab) do(t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(tb.ctx, steps...); err != nil {
		t.Fatalf("%s: %v", tb.name, err)
	}
}

// poll waits until the JavaScript expression, which may be async, gives a
// truthy value, and returns it. The page polls itself every 50 ms, so the
// test needs no sleeps. limit is what an idle machine needs at most; it
// only guards against a hung test, so it is stretched by pollSlack.
func poll[T any](t *testing.T, tb *tab, what string, limit time.Duration, expr string) T {
	t.Helper()
	limit *= pollSlack
	v, err := chromedp.Run(tb.ctx, chromedp.Poll[T](expr,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(limit)))
	if errors.Is(err, chromedp.ErrPollingTimeout) {
		t.Fatalf("%s: gave up after %v waiting for %s", tb.name, limit, what)
	}
	if err != nil {
		t.Fatalf("%s: waiting for %s: %v", tb.name, what, err)
	}
	return v
}

func eval[T any](t *testing.T, tb *tab, expr string) T {
	t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: %s: %v", tb.name, expr, err)
	}
	return v
}

// artifactDir is where screenshots go: $ICEBOX_ARTIFACTS, or one fixed
// directory under the temp dir that each run overwrites.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("ICEBOX_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "icebox-web-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func (tb *tab) screenshot(t *testing.T, file string) {
	t.Helper()
	png, err := chromedp.Run(tb.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("%s: screenshot: %v", tb.name, err)
		return
	}
	path := filepath.Join(artifactDir(t), file)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Error(err)
		return
	}
	t.Logf("screenshot of %s: %s", tb.name, path)
}
