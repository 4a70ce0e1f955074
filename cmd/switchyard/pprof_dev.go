//go:build pprof

package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
)

func init() {
	if os.Getenv("SYP_MEMRATE") != "" {
		runtime.MemProfileRate = 64
	}
	go http.ListenAndServe("127.0.0.1:6060", nil)
}
