// Package quantity reads and prints byte counts as operators type them on
// command lines: plain bytes or a binary suffix (Ki, Mi, Gi, Ti). One
// parser for every command (csictl, rbd-csi setup).
package quantity

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrInvalid is wrapped by every Parse error.
var ErrInvalid = errors.New("invalid size")

// sizeUnits maps the accepted binary suffixes to their multipliers.
var sizeUnits = map[string]int64{
	"":   1,
	"Ki": 1 << 10,
	"Mi": 1 << 20,
	"Gi": 1 << 30,
	"Ti": 1 << 40,
}

// Parse parses a positive byte count such as "1073741824", "512Mi" or
// "1Gi". Only the binary suffixes Ki, Mi, Gi and Ti are accepted.
func Parse(s string) (int64, error) {
	digits, unit := splitNumber(s)
	if digits == "" {
		return 0, fmt.Errorf("%w %q: expected a whole number of bytes with an optional Ki, Mi, Gi or Ti suffix (e.g. 1Gi)", ErrInvalid, s)
	}
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("%w %q: %s", ErrInvalid, s, unitHint(unit))
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%w %q: too large", ErrInvalid, s)
	}
	if n == 0 {
		return 0, fmt.Errorf("%w %q: must be greater than zero", ErrInvalid, s)
	}
	return n * mult, nil
}

// splitNumber splits s into its leading decimal digits and the remainder.
func splitNumber(s string) (digits, rest string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i], s[i:]
}

// unitHint explains why a size suffix was rejected.
func unitHint(unit string) string {
	switch {
	case strings.ContainsAny(unit, " \t\r\n"):
		return "must not contain spaces"
	case strings.HasPrefix(unit, "."):
		return "fractions are not supported, use a smaller unit (e.g. 1536Mi instead of 1.5Gi)"
	case len(unit) > 0 && strings.ContainsRune("kKMGTP", rune(unit[0])):
		return fmt.Sprintf("unit %q is not supported, use the binary suffixes Ki, Mi, Gi or Ti (e.g. 1Gi)", unit)
	default:
		return fmt.Sprintf("unexpected %q after the number, use Ki, Mi, Gi, Ti or plain bytes", unit)
	}
}

// Format renders a byte count with the largest exact binary suffix.
func Format(n int64) string {
	for _, u := range []string{"Ti", "Gi", "Mi", "Ki"} {
		if m := sizeUnits[u]; n != 0 && n%m == 0 {
			return strconv.FormatInt(n/m, 10) + u
		}
	}
	return strconv.FormatInt(n, 10)
}
