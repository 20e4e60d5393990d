package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"unicode"
)

// secretsEnv names the environment variable that may hold a JSON object of
// secrets when --secrets-file is not given.
const secretsEnv = "CSI_SECRETS"

// errSecretsFormat marks malformed secrets input. Messages built on it
// never quote the input (keys included, as a malformed line may hold a
// secret in its key position), so secrets cannot leak through errors.
var errSecretsFormat = errors.New("invalid secrets format")

// loadSecrets reads secrets from file when set, else from $CSI_SECRETS.
// It returns nil when neither is set.
func loadSecrets(file string, getenv func(string) string) (map[string]string, error) {
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("reading secrets file: %w", err)
		}
		m, err := parseSecrets(data)
		if err != nil {
			return nil, fmt.Errorf("secrets file %s: %w", file, err)
		}
		return m, nil
	}
	v := getenv(secretsEnv)
	if v == "" {
		return nil, nil
	}
	m, err := parseSecretsJSON([]byte(v))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", secretsEnv, err)
	}
	return m, nil
}

// parseSecrets accepts either a JSON object of strings or key=value lines.
func parseSecrets(data []byte) (map[string]string, error) {
	trimmed := bytes.TrimSpace(data)
	switch {
	case len(trimmed) == 0:
		return nil, fmt.Errorf("%w: no secrets found (expected key=value lines or a JSON object)", errSecretsFormat)
	case trimmed[0] == '{':
		return parseSecretsJSON(trimmed)
	case strings.ContainsRune("[\"", rune(trimmed[0])):
		return nil, fmt.Errorf("%w: JSON input must be an object of string values", errSecretsFormat)
	default:
		return parseSecretLines(string(data))
	}
}

// parseSecretsJSON decodes a JSON object whose values are all strings.
func parseSecretsJSON(data []byte) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, sanitizeJSONError(err)
	}
	if m == nil {
		return nil, fmt.Errorf("%w: JSON input must be an object of string values", errSecretsFormat)
	}
	if _, ok := m[""]; ok {
		return nil, fmt.Errorf("%w: empty key", errSecretsFormat)
	}
	return m, nil
}

// sanitizeJSONError describes a JSON decoding error without echoing any of
// the input (a syntax error message would quote the offending character).
// Keys are not quoted either: a mangled file may have a secret in a key.
func sanitizeJSONError(err error) error {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Errorf("%w: malformed JSON near byte offset %d", errSecretsFormat, syn.Offset)
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return fmt.Errorf("%w: JSON input must be an object of string values (got %s)", errSecretsFormat, typ.Value)
	}
	return fmt.Errorf("%w: malformed JSON", errSecretsFormat)
}

// parseSecretLines parses "key=value" lines. Blank lines and lines starting
// with '#' are skipped; values are taken verbatim up to the end of line.
func parseSecretLines(text string) (map[string]string, error) {
	m := map[string]string{}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSuffix(line, "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		key, value, err := parseSecretLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("line %d: %w: duplicate key", i+1, errSecretsFormat)
		}
		m[key] = value
	}
	return m, nil
}

// parseSecretLine validates a single non-empty key=value line.
func parseSecretLine(line string) (key, value string, err error) {
	key, value, ok := strings.Cut(line, "=")
	key = strings.TrimSpace(key)
	switch {
	case !ok:
		return "", "", fmt.Errorf("%w: expected key=value (supported formats: key=value lines or a JSON object)", errSecretsFormat)
	case key == "":
		return "", "", fmt.Errorf("%w: empty key", errSecretsFormat)
	case strings.IndexFunc(key, unicode.IsSpace) >= 0 || strings.ContainsAny(key, ":\"'"):
		return "", "", fmt.Errorf("%w: key must not contain spaces, quotes or ':' (supported formats: key=value lines or a JSON object)", errSecretsFormat)
	case isQuoted(value):
		return "", "", fmt.Errorf("%w: quoted value; write key=value without quotes", errSecretsFormat)
	}
	return key, value, nil
}

// isQuoted reports whether v is wrapped in matching single or double quotes.
func isQuoted(v string) bool {
	return len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0]
}

// redactor replaces every secret value in s with "***".
type redactor []string

// newRedactor builds a redactor for the values of secrets, longest first so
// that overlapping values are fully hidden.
func newRedactor(secrets map[string]string) redactor {
	var vals []string
	for _, v := range secrets {
		if v != "" {
			vals = append(vals, v)
		}
	}
	sort.Slice(vals, func(i, j int) bool { return len(vals[i]) > len(vals[j]) })
	return vals
}

func (r redactor) apply(s string) string {
	for _, v := range r {
		s = strings.ReplaceAll(s, v, "***")
	}
	return s
}
