# The server's clock, from an HTTP Date header: Auth.sync() corrects a device clock that
# nobody has set yet with it. Imported for one parse and dropped again.
_MONTHS = "JanFebMarAprMayJunJulAugSepOctNovDec"
_MDAYS = b"\x1f\x1c\x1f\x1e\x1f\x1e\x1f\x1f\x1e\x1f\x1e\x1f"


def _digits(s, n):
    if len(s) != n or not s.isdigit():
        raise ValueError("bad date")
    return int(s)


def parse_date(s):
    """Unix seconds of an RFC 7231 IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT").

    Own civil-date arithmetic: time.mktime's epoch differs between ports.
    Anything else raises ValueError.
    """
    if isinstance(s, (bytes, bytearray)):
        s = bytes(s).decode()
    p = s.split()
    if len(p) != 6 or len(p[0]) != 4 or p[0][3] != "," or p[5] != "GMT" or len(p[2]) != 3:
        raise ValueError("bad date")
    m = _MONTHS.find(p[2])
    if m < 0 or m % 3:
        raise ValueError("bad date")
    m = m // 3 + 1
    y = _digits(p[3], 4)
    d = _digits(p[1], 2)
    hms = p[4].split(":")
    if len(hms) != 3:
        raise ValueError("bad date")
    hh, mi, ss = _digits(hms[0], 2), _digits(hms[1], 2), _digits(hms[2], 2)
    leap = m == 2 and y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    if not 1 <= d <= _MDAYS[m - 1] + leap or hh > 23 or mi > 59 or ss > 60:
        raise ValueError("bad date")
    # days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's days_from_civil)
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return days * 86400 + hh * 3600 + mi * 60 + ss
