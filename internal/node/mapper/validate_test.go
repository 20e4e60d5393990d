package mapper

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateKeyAcceptsOnlyPaddedBase64(t *testing.T) {
	half := len(testKey) / 2
	bad := map[string]string{
		"line feed inside":         testKey[:half] + "\n" + testKey[half:],
		"carriage return inside":   testKey[:half] + "\r" + testKey[half:],
		"CRLF inside":              testKey[:half] + "\r\n" + testKey[half:],
		"space inside":             testKey[:half] + " " + testKey[half:],
		"trailing newline":         testKey + "\n", // checkImage trims; validateKey alone does not
		"URL-safe alphabet":        strings.NewReplacer("+", "-", "/", "_").Replace(makeKey([]byte{0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb})),
		"padding in the middle":    testKey[:8] + "=" + testKey[9:],
		"three padding characters": strings.TrimRight(testKey, "=") + "===",
		"missing padding":          strings.TrimRight(testKey, "="),
		"NUL byte":                 testKey[:half] + "\x00" + testKey[half+1:],
		"non-ASCII":                testKey[:half] + "é" + testKey[half+2:],
		"comma option":             testKey + ",ro",
		"too long":                 strings.Repeat("A", 260),
		"empty":                    "",
	}
	for name, k := range bad {
		t.Run(name, func(t *testing.T) {
			err := validateKey(k)
			if !errors.Is(err, ErrInvalidImage) {
				t.Fatalf("validateKey accepted it: %v", err)
			}
			if k != "" && strings.Contains(err.Error(), strings.TrimSpace(k)) {
				t.Errorf("error %q echoes the key", err)
			}
			if strings.Contains(err.Error(), testKey[:half]) {
				t.Errorf("error %q echoes part of the key", err)
			}
		})
	}
	if err := validateKey(testKey); err != nil {
		t.Errorf("validateKey(good key) = %v", err)
	}
	if err := validateKey(makeKey(make([]byte, 32))); err != nil {
		t.Errorf("validateKey(AES-256 sized key) = %v", err)
	}
}

func TestCheckImageTrimsSurroundingWhitespaceFromTheKey(t *testing.T) {
	img := Image{Monitors: []string{"10.0.0.1"}, User: "admin", Key: " \t" + testKey + "\r\n", Pool: "kube", Name: "img"}
	got, err := checkImage(img)
	if err != nil || got.Key != testKey {
		t.Fatalf("checkImage = %q, %v; want the trimmed key", got.Key, err)
	}
	img.Key = testKey[:4] + "\n" + testKey[4:] + "\n"
	if _, err := checkImage(img); !errors.Is(err, ErrInvalidImage) || !strings.Contains(err.Error(), "line break") {
		t.Errorf("checkImage with an embedded newline = %v, want ErrInvalidImage naming the line break", err)
	}
}
