package e2e

import (
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// TestUpgradeReturnsConnectionSlot: a tunnel's upstream connection gives back its
// max_connections slot when the tunnel ends, so with max_connections: 1 tunnels can follow one
// another forever, and upstream_cx_active returns to 0 with one upstream_cx_destroy per tunnel.
func TestUpgradeReturnsConnectionSlot(t *testing.T) {
	t.Parallel()
	up := harness.NewRawUpstream(t)
	p := harness.Start(t, harness.Config{UpstreamPort: up.Port(), HCM: "upgrade_configs: [{upgrade_type: websocket}]",
		Cluster: "circuit_breakers: {thresholds: [{max_connections: 1, max_pending_requests: 0}]}"}.YAML())
	const tunnels = 3
	for i := 0; i < tunnels; i++ {
		c, u := drainTunnel(t, p, up)
		c.Write("x")
		u.WaitForData("x", 5*time.Second)
		c.Close()
		u.WaitForEOF(5 * time.Second)
		u.Close()
		p.WaitStat("cluster.app.upstream_cx_active", 0, 5*time.Second)
	}
	if v := p.Stat("cluster.app.upstream_cx_destroy"); v != tunnels {
		t.Errorf("upstream_cx_destroy = %d, want %d", v, tunnels)
	}
	p.WaitStat("http.ingress.downstream_cx_upgrades_active", 0, 5*time.Second)
}
