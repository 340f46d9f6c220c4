package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, method, target string, hdr ...string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	Handler().ServeHTTP(w, r)
	return w.Result()
}

func TestPagesAndHeaders(t *testing.T) {
	for path, ctype := range map[string]string{
		"/":                 "text/html; charset=utf-8",
		"/check":            "text/html; charset=utf-8",
		"/assets/call.js":   "text/javascript; charset=utf-8",
		"/assets/check.js":  "text/javascript; charset=utf-8",
		"/assets/signal.js": "text/javascript; charset=utf-8",
		"/assets/style.css": "text/css; charset=utf-8",
		"/assets/icon.svg":  "image/svg+xml",
	} {
		res := get(t, "GET", path)
		if res.StatusCode != 200 {
			t.Errorf("GET %s: %s", path, res.Status)
			continue
		}
		h := res.Header
		if got := h.Get("Content-Type"); got != ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", path, got, ctype)
		}
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "connect-src 'self' ws://example.com wss://example.com", "object-src 'none'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: CSP %q lacks %q", path, csp, want)
			}
		}
		for k, want := range map[string]string{
			"Cache-Control":          "no-cache",
			"X-Content-Type-Options": "nosniff",
			"Referrer-Policy":        "no-referrer",
		} {
			if got := h.Get(k); got != want {
				t.Errorf("GET %s: %s %q, want %q", path, k, got, want)
			}
		}
	}
}

func TestNotFoundAndMethods(t *testing.T) {
	for _, path := range []string{"/index.html", "/check.html", "/assets/layout.html", "/assets/index.html", "/check/", "/assets/", "/assets", "/favicon.ico", "/connect", "/assets/../web.go"} {
		if res := get(t, "GET", path); res.StatusCode != 404 {
			t.Errorf("GET %s: %s, want 404", path, res.Status)
		}
	}
	res := get(t, "POST", "/")
	if res.StatusCode != 405 || res.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /: %s, Allow %q", res.Status, res.Header.Get("Allow"))
	}
	if res := get(t, "HEAD", "/check"); res.StatusCode != 200 {
		t.Errorf("HEAD /check: %s", res.Status)
	}
}

// An unchanged page costs a 304: no-cache only makes the browser ask.
func TestRevalidation(t *testing.T) {
	etag := get(t, "GET", "/").Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if res := get(t, "GET", "/", "If-None-Match", etag); res.StatusCode != 304 {
		t.Errorf("GET / with its ETag: %s, want 304", res.Status)
	}
	if get(t, "GET", "/check").Header.Get("ETag") == etag {
		t.Error("/ and /check share an ETag")
	}
}

func TestCSPHost(t *testing.T) {
	for host, want := range map[string]string{
		"localhost:8080": "connect-src 'self' ws://localhost:8080 wss://localhost:8080;",
		"[::1]:8080":     "connect-src 'self' ws://[::1]:8080 wss://[::1]:8080;",
		"":               "connect-src 'self';",
		"a;b":            "connect-src 'self';",
		"a b":            "connect-src 'self';",
		"a'b":            "connect-src 'self';",
	} {
		if got := csp(host); !strings.Contains(got, want) {
			t.Errorf("csp(%q) = %q, want it to contain %q", host, got, want)
		}
	}
}

// The pages must load nothing from elsewhere, and everything they load
// must be served. What is checked is what is served: the HTML pages as
// rendered from their templates, every other asset as embedded.
func TestAssetsSelfContained(t *testing.T) {
	ref := regexp.MustCompile(`(?:src|href)="([^"]+)"|from '([^']+)'`)
	external := regexp.MustCompile(`(?i)(?:["'(=]|url\()\s*(?:https?:)?//[a-z0-9\[]`)
	for p, pg := range routes {
		b := pg.body
		for _, line := range strings.Split(string(b), "\n") {
			if m := external.FindString(line); m != "" && !strings.Contains(line, "xmlns=") {
				t.Errorf("%s refers elsewhere: %s", p, strings.TrimSpace(line))
			}
		}
		for _, m := range ref.FindAllStringSubmatch(string(b), -1) {
			u := m[1] + m[2]
			if strings.HasPrefix(u, "./") {
				u = "/assets/" + strings.TrimPrefix(u, "./")
			}
			if res := get(t, "GET", u); res.StatusCode != 200 {
				t.Errorf("%s refers to %s, which is %s", p, u, res.Status)
			}
		}
	}
	body, _ := io.ReadAll(get(t, "GET", "/").Body)
	if !strings.Contains(string(body), `src="/assets/call.js"`) {
		t.Error("/ does not load call.js")
	}
}
