// Package web serves icebox's embedded web pages: the call page at "/",
// which lets two browser tabs (or a phone and a laptop) call each other
// through icebox's own /connect, STUN and TURN, and the diagnostics page at
// "/check", which says whether STUN and TURN work from where the browser is.
//
// The pages are plain HTML, CSS and JavaScript embedded in the binary: no
// build step, nothing fetched from elsewhere, so the first run of icebox
// shows something useful even on a machine without internet access.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// page is one embedded file, with what the handler needs to serve it.
type page struct {
	body  []byte
	etag  string
	ctype string
}

// routes maps a request path to the file served there. The HTML pages get
// short names; everything else lives under /assets/ so the signaling mux
// (/connect, /ice-servers, ...) and the pages cannot collide.
var routes = buildRoutes()

func buildRoutes() map[string]*page {
	m := map[string]*page{
		"/":      render("index.html"),
		"/check": render("check.html"),
	}
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, ".html") {
			return err
		}
		m["/"+p] = load(p)
		return nil
	})
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return m
}

func load(name string) *page {
	b, err := assets.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return newPage(name, b)
}

// render builds an HTML page: assets/layout.html, the head and header
// every page shares, around assets/<name>. A page starts with one
// "<!-- key: value -->" line for each of title, script and nav; the rest
// is its main. It runs once, at start-up, so a page costs what a static
// file does. Plain replacement rather than html/template: the values are
// our own fixed files, and html/template's reflection would add 3 MB to a
// binary meant for small edge boxes.
func render(name string) *page {
	layout, err := assets.ReadFile("assets/layout.html")
	if err != nil {
		panic(err)
	}
	src, err := assets.ReadFile("assets/" + name)
	if err != nil {
		panic(err)
	}
	rest := string(src)
	var pairs []string
	for _, key := range []string{"title", "script", "nav"} {
		line, after, _ := strings.Cut(rest, "\n")
		value, hasPrefix := strings.CutPrefix(line, "<!-- "+key+": ")
		value, hasSuffix := strings.CutSuffix(value, " -->")
		if !hasPrefix || !hasSuffix {
			panic("assets/" + name + ": want <!-- " + key + ": ... --> here, not " + line)
		}
		pairs = append(pairs, "{{"+key+"}}", value)
		rest = after
	}
	pairs = append(pairs, "{{main}}", strings.TrimSuffix(rest, "\n"))
	return newPage(name, []byte(strings.NewReplacer(pairs...).Replace(string(layout))))
}

func newPage(name string, b []byte) *page {
	sum := sha256.Sum256(b)
	ctype := mime.TypeByExtension(path.Ext(name))
	if path.Ext(name) == ".js" {
		// Some systems' mime tables lack .js or map it to text/plain, and
		// with nosniff the browser would then refuse the module.
		ctype = "text/javascript; charset=utf-8"
	}
	return &page{body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, ctype: ctype}
}

// Handler serves "/" (the call page), "/check" (diagnostics) and their
// assets under "/assets/". Every other path is 404, so it can be mounted
// at "/" beside /connect without hiding typos.
func Handler() http.Handler {
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	p := routes[r.URL.Path]
	if p == nil {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Security-Policy", csp(r.Host))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Permissions-Policy", "camera=(self), microphone=(self)")
	// no-cache means "revalidate", so an upgraded binary's pages show at
	// once while an unchanged one costs a 304 thanks to the ETag.
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Type", p.ctype)
	h.Set("ETag", p.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(p.body)) // Content-Type is set: no name to guess it from
}

// csp allows only icebox itself. 'self' covers ws:/wss: to the same host
// in CSP level 3 browsers; older ones (Safari before 15.4) need the
// WebSocket origin spelled out, so it is added when the Host header is a
// plain host[:port] that cannot smuggle anything into the header.
func csp(host string) string {
	connect := "'self'"
	if validHost(host) {
		connect += " ws://" + host + " wss://" + host
	}
	// Videos play MediaStreams through srcObject, which media-src does
	// not govern, so 'self' covers everything the pages load.
	return "default-src 'self'; connect-src " + connect +
		"; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}

func validHost(h string) bool {
	if h == "" || len(h) > 261 {
		return false
	}
	for _, c := range h {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune(".-:[]", c):
		default:
			return false
		}
	}
	return true
}
