package turnsrv

import (
	"net"
	"testing"

	"github.com/pion/stun/v3"

	"icebox/internal/testenv"
)

// TestQuotas fills each quota with pion clients, checks the next
// allocation gets 486, and that closing one makes room again.
func TestQuotas(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		set   func(*QuotaConfig)
		users []string // the last one is refused
		by    string
	}{
		{"per user across UDP and TCP", func(q *QuotaConfig) { q.PerUser = 2 }, []string{"ann", "ann", "ann"}, quotaUser},
		{"per source", func(q *QuotaConfig) { q.PerUser, q.PerIP = 0, 2 }, []string{"bea", "cid", "dot"}, quotaIP},
		{"total", func(q *QuotaConfig) { q.PerUser, q.PerIP, q.Total = 0, 0, 2 }, []string{"eve", "fay", "gus"}, quotaTotal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			tc.set(&cfg.Quotas)
			ts := startServer(t, cfg)
			allocate := func(i int, user string) (net.PacketConn, error) {
				network := []string{"udp", "tcp"}[i%2]
				u, p, _ := ts.MintCredential(user, 0)
				client, _ := dialTURN(t, network, ts.addr(network), u, p)
				return client.Allocate()
			}
			var held []net.PacketConn
			last := len(tc.users) - 1
			for i, user := range tc.users[:last] {
				r, err := allocate(i, user)
				if err != nil {
					t.Fatalf("allocation %d for %s: %v", i, user, err)
				}
				held = append(held, r)
			}
			_, err := allocate(last, tc.users[last])
			if code := turnCode(err); code != int(stun.CodeAllocQuotaReached) {
				t.Fatalf("allocation over quota: %v, want 486", err)
			}
			if got := testenv.MetricValue(t, ts.metrics.quotaRefusals[tc.by]); got != 1 {
				t.Errorf("quota_refusals{quota=%q} = %v, want 1", tc.by, got)
			}

			held[0].Close()
			ts.waitAllocations(t, last-1)
			r, err := allocate(last, tc.users[last])
			if err != nil {
				t.Fatalf("allocation after one was released: %v", err)
			}
			r.Close()
			for _, r := range held[1:] {
				r.Close()
			}
			ts.waitAllocations(t, 0)
			if v := testenv.MetricValue(t, ts.metrics.allocActive); v != 0 {
				t.Errorf("allocations_active = %v after all closed", v)
			}
			if v := testenv.MetricValue(t, ts.metrics.allocTotal); v != float64(last+1) {
				t.Errorf("allocations_total = %v, want %d", v, last+1)
			}
		})
	}
}
