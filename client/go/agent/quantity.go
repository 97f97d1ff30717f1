package agent

import (
	"fmt"
	"math"
	"math/big"
	"strings"
)

// Binary and decimal suffixes of Kubernetes quantities.
var quantitySuffixes = []struct {
	suffix string
	mult   *big.Rat
}{
	// Longest first: "Ki" before "k"... and "m" (milli) is decimal 1/1000.
	{"Ki", big.NewRat(1<<10, 1)}, {"Mi", big.NewRat(1<<20, 1)}, {"Gi", big.NewRat(1<<30, 1)},
	{"Ti", big.NewRat(1<<40, 1)}, {"Pi", big.NewRat(1<<50, 1)}, {"Ei", big.NewRat(1<<60, 1)},
	{"k", big.NewRat(1e3, 1)}, {"M", big.NewRat(1e6, 1)}, {"G", big.NewRat(1e9, 1)},
	{"T", big.NewRat(1e12, 1)}, {"P", big.NewRat(1e15, 1)}, {"E", big.NewRat(1e18, 1)},
	{"m", big.NewRat(1, 1e3)},
}

// parseQuantity parses a Kubernetes resource quantity ("128Mi", "1Gi",
// "500M", "1.5G", "1e3", "250m", "134217728") as an exact rational.
func parseQuantity(s string) (*big.Rat, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return nil, fmt.Errorf("quantity %q: empty", s)
	}
	mult := big.NewRat(1, 1)
	for _, q := range quantitySuffixes {
		if strings.HasSuffix(t, q.suffix) {
			t = strings.TrimSuffix(t, q.suffix)
			mult = q.mult
			break
		}
	}
	if t == "" || strings.ContainsAny(t, " \t") {
		return nil, fmt.Errorf("quantity %q: no number", s)
	}
	// Exponent forms ("1e3") only without a suffix.
	if strings.ContainsAny(t, "eE") && mult.Cmp(big.NewRat(1, 1)) != 0 {
		return nil, fmt.Errorf("quantity %q: exponent with a suffix", s)
	}
	r, ok := new(big.Rat).SetString(t)
	if !ok || r.Sign() < 0 {
		return nil, fmt.Errorf("quantity %q: not a non-negative number", s)
	}
	return r.Mul(r, mult), nil
}

// ParseBytes parses a memory quantity (Ki Mi Gi Ti, k M G T, plain bytes,
// decimals like "1.5Gi") into bytes, rounded up to a whole byte. Errors on
// malformed input or values above 2^63-1.
func ParseBytes(s string) (int64, error) {
	r, err := parseQuantity(s)
	if err != nil {
		return 0, err
	}
	return ceilInt64(r, s)
}

// ParseMilliCPU parses a CPU quantity ("250m", "1", "0.5", "2k") into
// millicores, rounded up.
func ParseMilliCPU(s string) (int64, error) {
	r, err := parseQuantity(s)
	if err != nil {
		return 0, err
	}
	return ceilInt64(r.Mul(r, big.NewRat(1000, 1)), s)
}

func ceilInt64(r *big.Rat, s string) (int64, error) {
	q, m := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	if m.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsInt64() {
		return 0, fmt.Errorf("quantity %q: too large", s)
	}
	return q.Int64(), nil
}

const mi = 1 << 20

// FormatMi formats bytes as whole mebibytes ("192Mi"), rounding to the
// nearest Mi (at least 1Mi).
func FormatMi(bytes float64) string {
	n := int64(math.Round(bytes / mi))
	if n < 1 {
		n = 1
	}
	return fmt.Sprintf("%dMi", n)
}

// FormatMilliCPU formats millicores ("500m", or "2" for whole cores).
func FormatMilliCPU(m int64) string {
	if m < 1 {
		m = 1
	}
	if m%1000 == 0 {
		return fmt.Sprintf("%d", m/1000)
	}
	return fmt.Sprintf("%dm", m)
}
