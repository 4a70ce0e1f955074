// Package archtest keeps the import rules of ARCHITECTURE.md: leaves stay leaves, the public
// filter API never sees internals, built-in filters never reach into the connection manager,
// router or clusters, and nothing imports the server or the command.
package archtest

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/switchyard-proxy/switchyard"

type pkg struct {
	ImportPath string
	Imports    []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	dec := json.NewDecoder(out)
	var pkgs []pkg
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	return pkgs
}

func TestImportRules(t *testing.T) {
	own := func(path string) (string, bool) {
		if path == module {
			return "", true
		}
		rest, ok := strings.CutPrefix(path, module+"/")
		return rest, ok
	}
	leaves := map[string]bool{"headers": true, "buffer": true, "internal/stats": true}
	for _, p := range listPackages(t) {
		me, _ := own(p.ImportPath)
		for _, imp := range p.Imports {
			dep, ok := own(imp)
			if !ok {
				continue
			}
			switch {
			case leaves[me]:
				t.Errorf("%s is a leaf but imports %s", me, dep)
			case me == "filter" && !leaves[dep]:
				t.Errorf("the public filter API imports %s; it may import only headers, buffer and stats", dep)
			case strings.HasPrefix(me, "internal/filters/") &&
				(dep == "internal/hcm" || dep == "internal/router" || dep == "internal/cluster" || dep == "internal/server"):
				t.Errorf("built-in filter %s imports %s", me, dep)
			case (dep == "internal/server" || strings.HasPrefix(dep, "cmd/")) && !strings.HasPrefix(me, "cmd/"):
				t.Errorf("%s imports %s; nothing but the command may import the server", me, dep)
			case strings.HasPrefix(dep, "cmd/"):
				t.Errorf("%s imports the command %s", me, dep)
			case dep == "internal/hcm" && me != "internal/server":
				t.Errorf("%s imports the connection manager; only the server may", me)
			}
		}
	}
}
