// Package confdoc writes icebox's documented config file from the Config
// structs themselves, so that each default is written once, in code: an
// option's value in the file is what DefaultConfig gives it, and its comment
// is the struct field's doc comment.
//
// Options are found by YAML path through reflection and their comments by the
// declaring package and type, so a field moving between structs keeps its
// comment and the file keeps its shape.
package confdoc

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Docs maps "importpath.Type.Field" to the field's comment text.
type Docs map[string]string

// ParseModule reads the doc comments of every struct field in the module
// rooted at dir (non-test files only).
func ParseModule(dir, modulePath string) (Docs, error) {
	docs := Docs{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != dir && (strings.HasPrefix(d.Name(), ".") || strings.HasPrefix(d.Name(), "_") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, err := filepath.Rel(dir, filepath.Dir(path))
		if err != nil {
			return err
		}
		pkg := modulePath
		if rel != "." {
			pkg += "/" + filepath.ToSlash(rel)
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return fmt.Errorf("confdoc: %w", err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return true
			}
			for _, field := range st.Fields.List {
				cg := field.Doc
				if cg == nil {
					cg = field.Comment
				}
				if cg == nil {
					continue
				}
				text := strings.TrimRight(cg.Text(), "\n")
				names := field.Names
				if len(names) == 0 { // embedded: named after its type
					docs[pkg+"."+ts.Name.Name+"."+embeddedName(field.Type)] = text
				}
				for _, name := range names {
					docs[pkg+"."+ts.Name.Name+"."+name.Name] = text
				}
			}
			return true
		})
		return nil
	})
	return docs, err
}

func embeddedName(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.StarExpr:
		return embeddedName(t.X)
	case *ast.SelectorExpr:
		return t.Sel.Name
	case *ast.Ident:
		return t.Name
	}
	return ""
}

// Option is one entry of the config file.
type Option struct {
	Path    string // YAML path, e.g. "turn.quotas.per_user"
	Depth   int    // nesting: 0 for top-level keys
	Key     string // the last element of Path
	Doc     string // the field's comment; "" if it has none
	Value   reflect.Value
	Section bool // a struct: its options follow, one level deeper
}

var durationType = reflect.TypeFor[time.Duration]()

// Options lists the options of cfg (a struct value holding the defaults) in
// declaration order, sections before their options. pkgAlias renames
// reflect's package paths, e.g. "main" to the main package's import path.
func Options(cfg any, docs Docs, pkgAlias map[string]string) []Option {
	var out []Option
	var walk func(v reflect.Value, prefix string, depth int)
	walk = func(v reflect.Value, prefix string, depth int) {
		t := v.Type()
		pkg := t.PkgPath()
		if a, ok := pkgAlias[pkg]; ok {
			pkg = a
		}
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" {
				continue
			}
			if opts == "inline" {
				walk(v.Field(i), prefix, depth)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			path := name
			if prefix != "" {
				path = prefix + "." + name
			}
			o := Option{
				Path:  path,
				Depth: depth,
				Key:   name,
				Doc:   docs[pkg+"."+t.Name()+"."+f.Name],
				Value: v.Field(i),
			}
			o.Section = f.Type.Kind() == reflect.Struct && f.Type != durationType
			out = append(out, o)
			if o.Section {
				walk(v.Field(i), path, depth+1)
			}
		}
	}
	walk(reflect.ValueOf(cfg), "", 0)
	return out
}

// Render writes the config file: header (comment lines, without "# "), then
// every option with its comment above it and its default as its value.
func Render(header string, opts []Option) ([]byte, error) {
	var b bytes.Buffer
	writeComment(&b, "", header)
	for _, o := range opts {
		indent := strings.Repeat("  ", o.Depth)
		if o.Depth == 0 {
			b.WriteString("\n")
		}
		writeComment(&b, indent, o.Doc)
		if o.Section {
			fmt.Fprintf(&b, "%s%s:\n", indent, o.Key)
			continue
		}
		v, err := Format(o.Value)
		if err != nil {
			return nil, fmt.Errorf("confdoc: %s: %w", o.Path, err)
		}
		fmt.Fprintf(&b, "%s%s: %s\n", indent, o.Key, v)
	}
	return b.Bytes(), nil
}

func writeComment(b *bytes.Buffer, indent, text string) {
	if text == "" {
		return
	}
	for line := range strings.SplitSeq(text, "\n") {
		if line == "" {
			fmt.Fprintf(b, "%s#\n", indent)
		} else {
			fmt.Fprintf(b, "%s# %s\n", indent, line)
		}
	}
}

// Format writes one value as YAML that reads back as the same value.
func Format(v reflect.Value) (string, error) {
	if v.Type() == durationType {
		return FormatDuration(time.Duration(v.Int())), nil
	}
	switch v.Kind() {
	case reflect.Bool:
		return strconv.FormatBool(v.Bool()), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10), nil
	case reflect.Float32, reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64), nil
	case reflect.String:
		return formatString(v.String()), nil
	case reflect.Slice:
		items := make([]string, v.Len())
		for i := range v.Len() {
			s, err := Format(v.Index(i))
			if err != nil {
				return "", err
			}
			items[i] = s
		}
		return "[" + strings.Join(items, ", ") + "]", nil
	}
	return "", fmt.Errorf("no YAML form for %s", v.Type())
}

// FormatDuration writes d as people do: "12h", "1m", "30s", "1h30m".
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// formatString leaves plain words unquoted and double-quotes the rest
// (addresses, ranges, URLs, empty strings), which YAML reads back verbatim.
func formatString(s string) string {
	plain := s != "" && (s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z')
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			plain = false
		}
	}
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "y", "n", "null":
		plain = false
	}
	if plain {
		return s
	}
	return strconv.Quote(s)
}

// CheckStatedDefault checks that the option's comment states its default
// ("Default 30s.", `Default ":8080"`, "Default none: ...") and that the
// stated value is the one the code gives it. Sections need no statement.
func (o Option) CheckStatedDefault() error {
	if o.Section {
		return nil
	}
	text := strings.Join(strings.Fields(o.Doc), " ")
	i := strings.Index(text, "Default ")
	if i < 0 {
		i = strings.Index(text, "default ")
	}
	if i < 0 {
		return fmt.Errorf("%s: the comment does not state the default (write \"Default X.\")", o.Path)
	}
	stated, _, _ := strings.Cut(text[i+len("Default "):], " ")
	return o.CheckStated(strings.TrimRight(stated, ".,;:)"))
}

// CheckStated checks a default stated elsewhere (README) against the code's.
func (o Option) CheckStated(stated string) error {
	got, err := Format(o.Value)
	if err != nil {
		return fmt.Errorf("%s: %w", o.Path, err)
	}
	if !sameValue(stated, o.Value) {
		return fmt.Errorf("%s: states default %s, the code gives %s", o.Path, stated, got)
	}
	return nil
}

func sameValue(stated string, v reflect.Value) bool {
	switch stated {
	case "none", "empty", "off":
		return v.IsZero() || v.Kind() == reflect.Slice && v.Len() == 0
	}
	if v.Type() == durationType {
		d, err := time.ParseDuration(stated)
		return err == nil && d == time.Duration(v.Int())
	}
	switch v.Kind() {
	case reflect.Bool:
		b, err := strconv.ParseBool(stated)
		return err == nil && b == v.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(stated, 10, 64)
		return err == nil && n == v.Int()
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(stated, 64)
		return err == nil && f == v.Float()
	case reflect.String:
		if s, err := strconv.Unquote(stated); err == nil {
			stated = s
		}
		return stated == v.String()
	}
	got, err := Format(v)
	return err == nil && got == stated
}
