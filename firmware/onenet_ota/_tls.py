# TLS for onenet_ota.http, imported only when an https URL is used: the plain-HTTP path
# never pays the heap for ssl or this code.
#
# The server certificate and host name are verified against the CA file (PEM or DER);
# without one, https is refused: there is no way to turn verification off. Every
# refusal is a ValueError, which http makes its TLSError (this module imports nothing of
# the package: http imports it).
import binascii
import ssl


def context(c):
    # Client.context holds the CA file's path (or None) until the first https connect
    # turns it into an SSLContext (kept for later connections).
    cafile = c.context
    if not (cafile is None or type(cafile) is str):
        return
    if not cafile:
        raise ValueError("https needs a CA certificate (ca_file)")
    try:
        with open(cafile, "rb") as f:
            cadata = f.read()
    except OSError:
        raise ValueError("no CA file %s" % cafile)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        # PEM is turned into DER here: not every build has mbedtls' PEM parser.
        # Each certificate of a bundle is added to the trusted chain.
        if b"-----BEGIN" in cadata:
            p = cadata.split(b"-----")
            for i in range(1, len(p) - 1):
                if p[i] == b"BEGIN CERTIFICATE":
                    ctx.load_verify_locations(cadata=binascii.a2b_base64(p[i + 1]))
        else:
            ctx.load_verify_locations(cadata=cadata)
    except ValueError:
        raise ValueError("bad CA certificate")
    c.context = ctx


def wrap_socket(c, sock, host):
    # The handshake runs here (under the socket's timeout), so a refused certificate or
    # host name stops the request before any of its bytes are sent. mbedtls refuses a
    # certificate with a ValueError (its message says why), which passes through.
    try:
        return c.context.wrap_socket(sock, server_hostname=host)
    except OSError as e:
        # mbedtls errors are negative codes below -256; the rest is the socket's
        n = e.args[0] if e.args else 0
        if isinstance(n, int) and n < -256:
            raise ValueError("TLS error %d" % n)
        raise
