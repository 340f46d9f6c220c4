package confdoc

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

type inner struct {
	// Wait this long. Default 90s.
	Wait time.Duration `yaml:"wait"`
}

type sample struct {
	// Where to listen. Default ":80".
	Listen string `yaml:"listen"`
	// Names. Default none.
	Names []string `yaml:"names"`
	// How many. Default 3.
	Count int `yaml:"count"`
	// A section.
	Inner  inner `yaml:"inner"`
	hidden int
}

var sampleDocs = Docs{
	"x.sample.Listen": "Where to listen. Default \":80\".",
	"x.sample.Names":  "Names. Default none.",
	"x.sample.Count":  "How many.\n\nDefault 3.",
	"x.sample.Inner":  "A section.",
	"x.inner.Wait":    "Wait this long. Default 90s.",
}

var alias = map[string]string{"icebox/internal/confdoc": "x"}

func TestRenderReadsBackAsTheDefaults(t *testing.T) {
	want := sample{Listen: ":80", Count: 3, Inner: inner{Wait: 90 * time.Second}, Names: []string{"a b", "yes"}}
	out, err := Render("head", Options(want, sampleDocs, alias))
	if err != nil {
		t.Fatal(err)
	}
	const golden = `# head

# Where to listen. Default ":80".
listen: ":80"

# Names. Default none.
names: ["a b", "yes"]

# How many.
#
# Default 3.
count: 3

# A section.
inner:
  # Wait this long. Default 90s.
  wait: 1m30s
`
	if string(out) != golden {
		t.Errorf("got\n%s\nwant\n%s", out, golden)
	}
	var got sample
	if err := yaml.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	got.hidden = want.hidden
	if got.Listen != want.Listen || got.Count != want.Count || got.Inner != want.Inner || strings.Join(got.Names, "|") != "a b|yes" {
		t.Errorf("read back %+v, want %+v", got, want)
	}
}

func TestCheckStatedDefaultCatchesDrift(t *testing.T) {
	cfg := sample{Listen: ":80", Count: 3, Inner: inner{Wait: 90 * time.Second}}
	for _, o := range Options(cfg, sampleDocs, alias) {
		if err := o.CheckStatedDefault(); err != nil {
			t.Errorf("agreeing default refused: %v", err)
		}
	}
	drifted := sample{Listen: ":8080", Names: []string{"a"}, Count: 4, Inner: inner{Wait: time.Minute}}
	var refused []string
	for _, o := range Options(drifted, sampleDocs, alias) {
		if err := o.CheckStatedDefault(); err != nil {
			refused = append(refused, o.Path)
		}
	}
	if got := strings.Join(refused, ","); got != "listen,names,count,inner.wait" {
		t.Errorf("drift caught at %q, want every option", got)
	}
	missing := Options(cfg, Docs{}, alias)
	if err := missing[0].CheckStatedDefault(); err == nil {
		t.Error("an option without a stated default passed")
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		12 * time.Hour: "12h", time.Minute: "1m", 30 * time.Second: "30s",
		90 * time.Minute: "1h30m", 1500 * time.Millisecond: "1.5s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("%v: got %q, want %q", d, got, want)
		}
	}
}

// The docs of the module's own structs are found by package, type and field.
func TestParseModuleFindsFieldDocs(t *testing.T) {
	docs, err := ParseModule(".", "x")
	if err != nil {
		t.Fatal(err)
	}
	if got := docs["x.Option.Path"]; !strings.Contains(got, "YAML path") {
		t.Errorf("Option.Path doc = %q", got)
	}
}
