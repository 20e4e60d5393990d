package kms

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

// TypeSecretKEK is the encryptionKMSType of the Secret-KEK backend, the
// only one implemented.
const TypeSecretKEK = "secret-kek"

// DefaultSecretKey is the Secret key holding the KEK when the KMS entry
// names none (and for volumes without encryptionKMSID).
const DefaultSecretKey = "encryptionKEK"

// Entry is one KMS of the configuration (ceph-csi's layout: a JSON object
// from KMS ID to settings, mounted from a ConfigMap).
type Entry struct {
	Type string `json:"encryptionKMSType"`
	// SecretKey is the key of the StorageClass's provisioner and node-stage
	// Secrets holding the KEK (default encryptionKEK).
	SecretKey string `json:"secretKey,omitempty"`
}

// Config is the KMS configuration: KMS ID to entry.
type Config struct{ entries map[string]Entry }

// LoadConfig reads the configuration file; an empty path is an empty
// configuration (volumes without encryptionKMSID still work).
func LoadConfig(path string) (*Config, error) {
	if path == "" {
		return &Config{}, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("KMS config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("KMS config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig validates a configuration.
func ParseConfig(data []byte) (*Config, error) {
	var entries map[string]Entry
	if err := json.Unmarshal(data, &entries); err != nil {
		return nil, fmt.Errorf("%w: want a JSON object from KMS ID to {\"encryptionKMSType\": %q, \"secretKey\": \"...\"}: %v", ErrConfig, TypeSecretKEK, err)
	}
	for id, e := range entries {
		if e.Type != TypeSecretKEK {
			return nil, fmt.Errorf("%w: KMS %q: encryptionKMSType %q is not implemented: use %q", ErrConfig, id, e.Type, TypeSecretKEK)
		}
	}
	return &Config{entries: entries}, nil
}

// IDs lists the configured KMS IDs, sorted.
func (c *Config) IDs() []string {
	ids := make([]string, 0, len(c.entries))
	for id := range c.entries {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Entry returns the entry of kmsID; "" is the built-in default (the
// Secret-KEK backend with the KEK under DefaultSecretKey).
func (c *Config) Entry(kmsID string) (Entry, error) {
	if kmsID == "" {
		return Entry{Type: TypeSecretKEK, SecretKey: DefaultSecretKey}, nil
	}
	e, ok := c.entries[kmsID]
	if !ok {
		known := "none configured"
		if ids := c.IDs(); len(ids) > 0 {
			known = "configured: " + strings.Join(ids, ", ")
		}
		return Entry{}, fmt.Errorf("%w: encryptionKMSID %q is not in the KMS configuration (--kms-config; %s)", ErrConfig, kmsID, known)
	}
	if e.SecretKey == "" {
		e.SecretKey = DefaultSecretKey
	}
	return e, nil
}

// Open returns the KMS of kmsID with the KEK from secrets (what names the
// secrets in errors, e.g. "provisioner secrets"). When the secrets also
// hold a different KEK under PreviousSecretKey, it is a Keyring: a
// rotation is in progress.
func (c *Config) Open(kmsID string, secrets map[string]string, what string) (KMS, error) {
	e, err := c.Entry(kmsID)
	if err != nil {
		return nil, err
	}
	raw, ok := secrets[e.SecretKey]
	if !ok {
		return nil, fmt.Errorf("%w: the %s have no key %q: add the volume's KEK to the Secret the StorageClass names", ErrNoKEK, what, e.SecretKey)
	}
	cur, err := secretKEK(raw, what, e.SecretKey)
	if err != nil {
		return nil, err
	}
	prevKey := PreviousSecretKey(e.SecretKey)
	raw, ok = secrets[prevKey]
	if !ok {
		return cur, nil
	}
	prev, err := secretKEK(raw, what, prevKey)
	if err != nil {
		return nil, err
	}
	if prev.KEKID() == cur.KEKID() {
		return cur, nil
	}
	return &Keyring{Current: cur, Previous: prev}, nil
}

// secretKEK parses the KEK under key of the secrets; errors name the key,
// never the value.
func secretKEK(raw, what, key string) (*SecretKEK, error) {
	k, err := NewSecretKEK(raw)
	if err != nil {
		return nil, fmt.Errorf("%s key %q: %w", what, key, err)
	}
	return k, nil
}
