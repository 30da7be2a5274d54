// Command argocd-health runs an Argo CD health script (deploy/argocd/health.lua) in
// gopher-lua, the Lua interpreter Argo CD embeds, set up as Argo CD sets it up for a health
// check configured in argocd-cm: only the package, base and table libraries and a reduced
// os library (time and date) are open, with no string or math library; the object is the
// global `obj`, converted from JSON the way Argo CD converts an unstructured object
// (integers and floats become numbers); the table the script returns is read for `status`
// and `message`, and a status that is not one of Argo CD's health codes becomes Unknown.
//
// Usage: argocd-health SCRIPT < objects.json
//
// stdin holds a JSON array of objects; stdout gets a JSON array with, per object, either
// {"status": ..., "message": ...} or {"error": ...} when the script failed.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// Argo CD stops a health script after one second.
const scriptTimeout = time.Second

// The health codes Argo CD accepts from a script.
var healthCodes = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

type result struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-health SCRIPT < objects.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail(err)
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var objects []map[string]any
	decoder := json.NewDecoder(bytes.NewReader(input))
	decoder.UseNumber()
	if err := decoder.Decode(&objects); err != nil {
		fail(fmt.Errorf("stdin: expected a JSON array of objects: %w", err))
	}
	results := make([]result, 0, len(objects))
	for _, object := range objects {
		results = append(results, assess(object, string(script)))
	}
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", " ")
	if err := out.Encode(results); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "argocd-health:", err)
	os.Exit(1)
}

// assess runs the script on one object.
func assess(object map[string]any, script string) result {
	state := newState()
	defer state.Close()
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	state.SetContext(ctx)
	state.SetGlobal("obj", toLua(state, object))
	if err := state.DoString(script); err != nil {
		return result{Error: err.Error()}
	}
	returned := state.Get(-1)
	table, ok := returned.(*lua.LTable)
	if !ok {
		return result{Error: fmt.Sprintf("expect table output from Lua script, not %s", returned.Type())}
	}
	status, statusOK := table.RawGetString("status").(lua.LString)
	message, _ := table.RawGetString("message").(lua.LString)
	if !statusOK || !healthCodes[string(status)] {
		return result{Status: "Unknown", Message: "Lua returned an invalid health status"}
	}
	return result{Status: string(status), Message: string(message)}
}

// newState opens the libraries Argo CD opens for a health script configured in argocd-cm:
// package, base and table, and an os library reduced to time and date, which Argo CD
// registers so that only `require("os")` reaches it (the global `os` stays nil).
func newState() *lua.LState {
	state := lua.NewState(lua.Options{SkipOpenLibs: true})
	for _, library := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, lua.OpenOs},
	} {
		if err := state.CallByParam(lua.P{
			Fn: state.NewFunction(library.open), NRet: 0, Protect: true,
		}, lua.LString(library.name)); err != nil {
			panic(err)
		}
	}
	// Keep gopher-lua's os.time and os.date, drop the rest (exit, execute, remove, getenv...).
	full := state.GetGlobal(lua.OsLibName).(*lua.LTable)
	safe := state.NewTable()
	for _, name := range []string{"time", "date"} {
		safe.RawSetString(name, full.RawGetString(name))
	}
	state.SetGlobal(lua.OsLibName, lua.LNil)
	loaded := state.GetField(state.Get(lua.RegistryIndex), "_LOADED").(*lua.LTable)
	loaded.RawSetString(lua.OsLibName, lua.LNil)
	state.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
		l.Push(safe)
		return 1
	})
	return state
}

// toLua converts a JSON value as Argo CD's converts an unstructured object's fields.
func toLua(state *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case json.Number:
		// The Kubernetes JSON decoder gives Argo CD int64 or float64, both Lua numbers.
		if i, err := v.Int64(); err == nil {
			return lua.LNumber(i)
		}
		f, err := v.Float64()
		if err != nil {
			return lua.LString(v)
		}
		return lua.LNumber(f)
	case []any:
		array := state.CreateTable(len(v), 0)
		for _, item := range v {
			array.Append(toLua(state, item))
		}
		return array
	case map[string]any:
		table := state.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), toLua(state, item))
		}
		return table
	}
	return lua.LNil
}
