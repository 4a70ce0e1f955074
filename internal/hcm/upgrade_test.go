package hcm

import (
	"testing"

	"github.com/switchyard-proxy/switchyard/internal/config"
)

// TestDecideUpgradeTruthTable is the seed's table, row by row, plus the rows Envoy adds for types
// the HCM does not list.
func TestDecideUpgradeTruthTable(t *testing.T) {
	router := &config.HTTPFilter{Name: config.RouterFilter}
	buffer := &config.HTTPFilter{Name: config.BufferFilter}
	custom := []*config.HTTPFilter{router}
	hcmWith := func(ucs ...*config.UpgradeConfig) *config.HCM {
		return &config.HCM{HTTPFilters: []*config.HTTPFilter{buffer, router}, Upgrades: ucs}
	}
	routeWith := func(m map[string]bool) *config.Route {
		return &config.Route{Action: &config.RouteAction{Cluster: "c", Upgrades: m}}
	}
	tests := []struct {
		name      string
		hcm       *config.HCM
		route     *config.Route
		token     string
		want      upgradeVerdict
		wantChain []*config.HTTPFilter
	}{
		{"hcm on, route default", hcmWith(&config.UpgradeConfig{Type: "websocket", Enabled: true}), routeWith(nil), "websocket", upgradeAccepted, nil},
		{"hcm on, route off", hcmWith(&config.UpgradeConfig{Type: "websocket", Enabled: true}), routeWith(map[string]bool{"websocket": false}), "websocket", upgradeRejected, nil},
		{"hcm off, route on", hcmWith(&config.UpgradeConfig{Type: "websocket", Enabled: false}), routeWith(map[string]bool{"websocket": true}), "websocket", upgradeAccepted, nil},
		{"hcm off, route off", hcmWith(&config.UpgradeConfig{Type: "websocket", Enabled: false}), routeWith(map[string]bool{"websocket": false}), "websocket", upgradeRejected, nil},
		{"hcm off, route default", hcmWith(&config.UpgradeConfig{Type: "websocket", Enabled: false}), routeWith(nil), "websocket", upgradeRejected, nil},
		{"hcm absent, route on", hcmWith(), routeWith(map[string]bool{"foo": true}), "foo", upgradeAccepted, nil},
		{"hcm absent, route absent", hcmWith(), routeWith(nil), "foo", upgradeRejected, nil},
		{"other type than configured", hcmWith(&config.UpgradeConfig{Type: "websocket", Enabled: true}), routeWith(nil), "foo", upgradeRejected, nil},
		{"case-insensitive token", hcmWith(&config.UpgradeConfig{Type: "websocket", Enabled: true}), routeWith(nil), "WebSocket", upgradeAccepted, nil},
		{"multi-valued token matches whole", hcmWith(&config.UpgradeConfig{Type: "websocket", Enabled: true}), routeWith(nil), "websocket, foo", upgradeRejected, nil},
		{"custom chain", hcmWith(&config.UpgradeConfig{Type: "foo", Enabled: true, Filters: custom}), routeWith(nil), "FOO", upgradeAccepted, custom},
		{"custom chain, enabled by route", hcmWith(&config.UpgradeConfig{Type: "foo", Enabled: false, Filters: custom}), routeWith(map[string]bool{"foo": true}), "foo", upgradeAccepted, custom},
		{"enabled, no route", hcmWith(&config.UpgradeConfig{Type: "websocket", Enabled: true}), nil, "websocket", upgradeAccepted, nil},
		{"not enabled, no route", hcmWith(), nil, "websocket", upgradeNoRoute, nil},
		{"direct response route uses hcm", hcmWith(&config.UpgradeConfig{Type: "websocket", Enabled: true}), &config.Route{DirectResponse: &config.DirectResponse{Status: 200}}, "websocket", upgradeAccepted, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, chain := decideUpgrade(tc.hcm, tc.route, tc.token)
			if got != tc.want {
				t.Fatalf("verdict = %v, want %v", got, tc.want)
			}
			want := tc.wantChain
			if want == nil && got != upgradeRejected {
				want = tc.hcm.HTTPFilters
			}
			if len(chain) != len(want) {
				t.Fatalf("chain has %d filters, want %d", len(chain), len(want))
			}
			for i := range want {
				if chain[i] != want[i] {
					t.Errorf("chain[%d] = %s, want %s", i, chain[i].Name, want[i].Name)
				}
			}
		})
	}
}
