package hcm

import (
	"strings"

	"github.com/switchyard-proxy/switchyard/internal/config"
)

// upgradeVerdict is what the upgrade_configs gate decided for one request.
type upgradeVerdict int

const (
	upgradeAccepted upgradeVerdict = iota // go on with the chosen chain
	upgradeRejected                       // 403, close the connection
	upgradeNoRoute                        // not enabled and no route matched: the default chain answers 404
)

// decideUpgrade applies the seed's truth table. A route entry for the type overrides the HCM
// entry; a type in neither is rejected. The chain is the HCM entry's filters when it has any,
// else the default http_filters — routes can never name filters.
//
//	HCM entry        route entry     result
//	enabled          absent          accept
//	enabled          enabled:false   reject
//	enabled:false    enabled         accept
//	enabled:false    enabled:false   reject
//	absent           enabled         accept
//	absent           absent          reject (no route at all: 404 from the router)
func decideUpgrade(h *config.HCM, route *config.Route, token string) (upgradeVerdict, []*config.HTTPFilter) {
	t := strings.ToLower(token)
	var entry *config.UpgradeConfig
	for _, u := range h.Upgrades {
		if u.Type == t {
			entry = u
			break
		}
	}
	enabled := entry != nil && entry.Enabled
	if route != nil && route.Action != nil {
		if on, ok := route.Action.Upgrades[t]; ok {
			enabled = on
		}
	}
	chain := h.HTTPFilters
	if entry != nil && len(entry.Filters) > 0 {
		chain = entry.Filters
	}
	switch {
	case enabled:
		return upgradeAccepted, chain
	case route == nil:
		return upgradeNoRoute, h.HTTPFilters
	default:
		return upgradeRejected, nil
	}
}
