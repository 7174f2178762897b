# The hot byte loops of delta.py in native code (viper). delta.py keeps plain-Python twins
# that give the same bytes, for ports without a native emitter.
#
# Four arguments at most (the limit of older native emitters); offsets and counts travel in
# an array("i") `ix`, so no call allocates.
import micropython


@micropython.viper
def add(out: ptr8, diff: ptr8, old: ptr8, ix: ptr32):
    # out[o + t] = diff[d + t] + old[b + t] (mod 256) for t < n; ix = o, d, b, n
    o = ix[0]
    d = ix[1]
    b = ix[2]
    end = o + ix[3]
    while o < end:
        out[o] = diff[d] + old[b]
        o += 1
        d += 1
        b += 1


@micropython.viper
def copy(out: ptr8, src: ptr8, ix: ptr32):
    # out[o + t] = src[d + t] for t < n; ix = o, d, -, n
    o = ix[0]
    d = ix[1]
    end = o + ix[3]
    while o < end:
        out[o] = src[d]
        o += 1
        d += 1


@micropython.viper
def unshrink(src: ptr8, st: ptr32, win: ptr8, dst: ptr8) -> int:
    # heatshrink, window 2^8, lookahead 2^7: decode src[st[0]:st[1]] into dst from 0 while a
    # whole token (up to 128 bytes) still fits below st[5]; returns the byte count. Bits are
    # MSB first: 1 + 8 bits a literal; 0 + 8 bits (distance - 1) + 7 bits (count - 1) a copy
    # from the 256-byte window. The bit reservoir (st[2], st[3] bits) and the window head
    # (st[4]) carry over to the next call.
    p = st[0]
    end = st[1]
    acc = st[2]
    nb = st[3]
    head = st[4]
    cap = st[5]
    n = 0
    while n <= cap:
        while nb <= 16 and p < end:
            acc = (acc << 8) | src[p]
            p += 1
            nb += 8
        if nb < 9:
            break
        if (acc >> (nb - 1)) & 1:
            c = (acc >> (nb - 9)) & 0xFF
            nb -= 9
            dst[n] = c
            win[head] = c
            head = (head + 1) & 0xFF
            n += 1
        else:
            if nb < 16:
                break
            back = ((acc >> (nb - 9)) & 0xFF) + 1
            count = ((acc >> (nb - 16)) & 0x7F) + 1
            nb -= 16
            while count > 0:
                c = win[(head - back) & 0xFF]
                dst[n] = c
                win[head] = c
                head = (head + 1) & 0xFF
                n += 1
                count -= 1
        acc &= (1 << nb) - 1
    st[0] = p
    st[2] = acc
    st[3] = nb
    st[4] = head
    return n
