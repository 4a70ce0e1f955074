//go:build pprof

package main

import (
	_ "expvar" // memstats at /debug/vars
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
)

func init() {
	if os.Getenv("SYP_MEMRATE") != "" {
		runtime.MemProfileRate = 64
	}
	addr := os.Getenv("SYP_ADDR") // two processes of a chain need two ports
	if addr == "" {
		addr = "127.0.0.1:6060"
	}
	go http.ListenAndServe(addr, nil)
}
