// Command csictl speaks the CSI gRPC protocol to a plugin's unix socket.
// It is meant for operators debugging a node or controller plugin and for
// scripts (such as the project's demo) that drive a volume through its
// lifecycle. Run "csictl --help" for the command list.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// Exit codes.
const (
	exitOK      = 0 // the RPC succeeded
	exitFailure = 1 // the RPC failed, or an input file could not be used
	exitUsage   = 2 // bad command line
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// run executes one csictl invocation and returns the process exit code.
func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	g := newGlobals()
	top := flag.NewFlagSet("csictl", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	g.register(top)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printTopUsage(stdout)
			return exitOK
		}
		return usageFailure(stderr, "", err)
	}
	rest := top.Args()
	if len(rest) == 0 {
		printTopUsage(stderr)
		return exitUsage
	}
	if rest[0] == "help" {
		return runHelp(rest[1:], stdout, stderr)
	}
	cmd := lookupCommand(rest[0])
	if cmd == nil {
		return usageFailure(stderr, "", fmt.Errorf("unknown command %q", rest[0]))
	}
	return runCommand(cmd, g, rest[1:], stdout, stderr, getenv)
}

// runCommand parses the subcommand's arguments, connects and runs it.
func runCommand(cmd *command, g *globals, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	act := cmd.bind(fs)
	g.register(fs)
	pos, err := parseArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		printCommandHelp(stdout, cmd)
		return exitOK
	}
	if err == nil {
		err = cmd.checkArgs(pos)
	}
	if err != nil {
		return usageFailure(stderr, cmd.name, err)
	}
	e, err := newEnv(g, stdout, getenv)
	if err != nil {
		return usageFailure(stderr, cmd.name, err)
	}
	defer e.close()
	return report(stderr, cmd.name, act(e, pos), e.redact)
}

// runHelp implements "csictl help [COMMAND]".
func runHelp(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printTopUsage(stdout)
		return exitOK
	}
	cmd := lookupCommand(args[0])
	if cmd == nil {
		return usageFailure(stderr, "", fmt.Errorf("unknown command %q", args[0]))
	}
	printCommandHelp(stdout, cmd)
	return exitOK
}

// usageError marks errors caused by how csictl was invoked (exit code 2).
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

// usagef builds a usageError; %w is honoured.
func usagef(format string, a ...any) error {
	return usageError{fmt.Errorf(format, a...)}
}

// usageFailure prints a usage error with a pointer to the help text.
func usageFailure(stderr io.Writer, cmdName string, err error) int {
	if cmdName == "" {
		fmt.Fprintf(stderr, "csictl: %v\nRun 'csictl --help' for usage.\n", err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "csictl %s: %v\nRun 'csictl %s --help' for usage.\n", cmdName, err, cmdName)
	return exitUsage
}

// report prints err (with secrets masked) and maps it to an exit code.
func report(stderr io.Writer, cmdName string, err error, r redactor) int {
	if err == nil {
		return exitOK
	}
	var ue usageError
	if errors.As(err, &ue) {
		return usageFailure(stderr, cmdName, errors.New(r.apply(err.Error())))
	}
	fmt.Fprintln(stderr, r.apply(fmt.Sprintf("csictl %s: %v", cmdName, err)))
	return exitFailure
}
