package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// action runs a parsed subcommand with its positional arguments.
type action func(e *env, pos []string) error

// command describes one subcommand and its single RPC.
type command struct {
	name     string
	group    string   // CSI service: identity, controller or node
	args     []string // names of the required positional arguments
	synopsis string   // flags shown in the usage line
	summary  string   // one line for the command list
	details  string   // longer description for --help
	bind     func(fs *flag.FlagSet) action
}

// commands lists every subcommand in help order.
var commands = []*command{
	infoCmd, probeCmd,
	createCmd, deleteCmd, expandCmd, listCmd, capacityCmd, validateCmd,
	snapshotCmd, deleteSnapshotCmd, listSnapshotsCmd, controllerCapsCmd,
	stageCmd, publishCmd, unpublishCmd, unstageCmd, nodeExpandCmd, statsCmd,
	nodeInfoCmd, nodeCapsCmd,
}

// lookupCommand returns the subcommand called name, or nil.
func lookupCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// checkArgs verifies the number of positional arguments.
func (c *command) checkArgs(pos []string) error {
	if len(pos) != len(c.args) {
		if len(c.args) == 0 {
			return usagef("unexpected argument %q", pos[0])
		}
		return usagef("expected %d argument(s) %s, got %d", len(c.args), strings.Join(c.args, " "), len(pos))
	}
	for i, p := range pos {
		if p == "" {
			return usagef("%s must not be empty", c.args[i])
		}
	}
	return nil
}

// usageLine renders "csictl [global flags] NAME ARGS FLAGS".
func (c *command) usageLine() string {
	parts := []string{"csictl [global flags]", c.name}
	parts = append(parts, c.args...)
	if c.synopsis != "" {
		parts = append(parts, c.synopsis)
	}
	return strings.Join(parts, " ")
}

// printCommandHelp documents a subcommand and every flag it accepts.
func printCommandHelp(w io.Writer, c *command) {
	fmt.Fprintf(w, "Usage: %s\n\n%s\n", c.usageLine(), c.summary)
	if c.details != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.details))
	}
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.bind(fs)
	if hasFlags(fs) {
		fmt.Fprintln(w, "\nFlags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
	fmt.Fprintln(w, "\nGlobal flags (accepted before or after the command):")
	printGlobalFlags(w)
}

// hasFlags reports whether fs defines any flag.
func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// printGlobalFlags documents the global flags with their defaults.
func printGlobalFlags(w io.Writer) {
	fs := flag.NewFlagSet("csictl", flag.ContinueOnError)
	newGlobals().register(fs)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

const topUsageHead = `csictl speaks CSI gRPC to a plugin's unix socket.

Usage: csictl [global flags] COMMAND [arguments] [flags]
       csictl help COMMAND   (or: csictl COMMAND --help)
`

const topUsageTail = `
Flags may be written -flag or --flag and may follow positional arguments.

Secrets are never taken from the command line. They are read from
--secrets-file (key=value lines or a JSON object) or from $CSI_SECRETS
(a JSON object), sent in every RPC that has a secrets field, and masked
in all output and error messages.

Exit status: 0 success, 1 RPC failure or unusable input file, 2 usage error.
`

// printTopUsage prints the command list grouped by CSI service.
func printTopUsage(w io.Writer) {
	fmt.Fprint(w, topUsageHead)
	for _, group := range []string{"identity", "controller", "node"} {
		fmt.Fprintf(w, "\n%s commands:\n", strings.ToUpper(group[:1])+group[1:])
		for _, c := range commands {
			if c.group == group {
				fmt.Fprintf(w, "  %-16s %s\n", c.name, c.summary)
			}
		}
	}
	fmt.Fprintln(w, "\nGlobal flags:")
	printGlobalFlags(w)
	fmt.Fprint(w, topUsageTail)
}
