package schemas

// Braze time strings (event and purchase "time", and "$time" inside nested custom
// attributes). docs/braze-rules.md §1 "Time formats" and §8 time-1..time-3.
//
// Braze documents "ISO 8601" plus a few fixed layouts. This package accepts exactly:
//
//	yyyy-MM-dd
//	yyyy-MM-dd<sep>HH:mm[:ss[.f{1,9} | :SSS]][zone]    sep = T | t | space
//	                                                   zone = Z | z | ±HH | ±HHmm | ±HH:mm
//
// which covers RFC 3339 (with or without offset and fractional seconds), the ISO 8601
// extended calendar form and Braze's "yyyy-MM-ddTHH:mm:ss:SSSZ". Months are 01-12, days are
// checked against the month (February allows 29 in every year: leap years are left to
// Braze), hours 00-23, minutes and seconds 00-59 (no leap second). Values without a zone are
// taken as UTC by Braze. The attribute-only layouts (MM/dd/yyyy, "ddd MM dd ...") are not
// accepted for event times.
//
// Forms outside Braze's documented layouts are sent normalised to RFC 3339 (normTime): a
// missing seconds field becomes ":00" (Java's OffsetDateTime.toString() at whole minutes:
// 2026-11-25T10:00Z), and a space separator followed by a fraction or a zone becomes 'T'
// (Python's str(datetime): 2026-11-25 10:00:00.123456+00:00). yyyy-MM-dd HH:mm:ss alone is a
// documented Braze layout and is sent as written.
//
// timePattern is the same grammar as a regular expression; common.schema.json carries it
// verbatim (a test holds the two in agreement).
const timePattern = `^[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|[12][0-9]))(?:[Tt ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,9}|:[0-9]{3})?)?(?:[Zz]|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?)?$`

// maxTimeLen bounds a valid time string: 10 + 1 + 8 + 10 (fraction) + 6 (zone).
const maxTimeLen = 35

// isBrazeTime reports whether b (the unescaped string) is a time as described above.
func isBrazeTime(b []byte) bool {
	ok, _ := timeForm(b)
	return ok
}

// timeForm reports whether b is a time as described above, and whether it must be
// normalised before it is sent.
func timeForm(b []byte) (ok, norm bool) {
	if len(b) < 10 || !isDate(b[:10]) {
		return false, false
	}
	if len(b) == 10 {
		return true, false
	}
	sep := b[10]
	if (sep != 'T' && sep != 't' && sep != ' ') || len(b) < 16 ||
		!isHour(b[11:13]) || b[13] != ':' || !isMinute(b[14:16]) {
		return false, false
	}
	rest := b[16:]
	hasSec, hasFrac := false, false
	if len(rest) > 0 && rest[0] == ':' {
		if len(rest) < 3 || !isMinute(rest[1:3]) {
			return false, false
		}
		hasSec, rest = true, rest[3:]
		if len(rest) > 0 && rest[0] == '.' {
			n := 1
			for n < len(rest) && isDigit(rest[n]) {
				n++
			}
			if n == 1 || n > 10 {
				return false, false
			}
			hasFrac, rest = true, rest[n:]
		} else if len(rest) > 0 && rest[0] == ':' {
			if len(rest) < 4 || !isDigit(rest[1]) || !isDigit(rest[2]) || !isDigit(rest[3]) {
				return false, false
			}
			hasFrac, rest = true, rest[4:]
		}
	}
	if !isZone(rest) {
		return false, false
	}
	return true, !hasSec || (sep == ' ' && (hasFrac || len(rest) > 0))
}

// appendNormTime appends the RFC 3339 form of a time for which timeForm reported norm:
// separator 'T', seconds ":00" when missing, the rest as written.
func appendNormTime(dst, b []byte) []byte {
	dst = append(dst, b[:10]...)
	dst = append(dst, 'T')
	dst = append(dst, b[11:16]...)
	rest := b[16:]
	if len(rest) > 0 && rest[0] == ':' {
		dst = append(dst, rest[:3]...)
		rest = rest[3:]
	} else {
		dst = append(dst, ":00"...)
	}
	return append(dst, rest...)
}

// isDate checks yyyy-MM-dd.
func isDate(b []byte) bool {
	if b[4] != '-' || b[7] != '-' {
		return false
	}
	for _, i := range [...]int{0, 1, 2, 3, 5, 6, 8, 9} {
		if !isDigit(b[i]) {
			return false
		}
	}
	month := int(b[5]-'0')*10 + int(b[6]-'0')
	day := int(b[8]-'0')*10 + int(b[9]-'0')
	if month < 1 || month > 12 || day < 1 {
		return false
	}
	switch month {
	case 2:
		return day <= 29
	case 4, 6, 9, 11:
		return day <= 30
	}
	return day <= 31
}

func isHour(b []byte) bool {
	return isDigit(b[0]) && isDigit(b[1]) && (b[0] < '2' || (b[0] == '2' && b[1] <= '3'))
}

func isMinute(b []byte) bool { return isDigit(b[1]) && '0' <= b[0] && b[0] <= '5' }

// isZone checks an optional zone: "", Z, ±HH, ±HHmm, ±HH:mm.
func isZone(z []byte) bool {
	switch {
	case len(z) == 0:
		return true
	case len(z) == 1:
		return z[0] == 'Z' || z[0] == 'z'
	case z[0] != '+' && z[0] != '-':
		return false
	}
	if len(z) < 3 || !isHour(z[1:3]) {
		return false
	}
	m := z[3:]
	if len(m) > 0 && m[0] == ':' {
		m = m[1:]
		if len(m) == 0 {
			return false
		}
	}
	return len(m) == 0 || (len(m) == 2 && isMinute(m))
}
