# TLS for onenet_ota.http, imported only when an https URL is used: the plain-HTTP path
# never pays the heap for ssl or this code.
#
# The server certificate and host name are verified against cadata (PEM or DER bytes) or
# cafile; without a CA, https is refused unless insecure=True was passed explicitly. Every
# refusal is a ValueError, which http makes its TLSError (this module imports nothing of
# the package: http imports it).
import binascii
import ssl


def context(c):
    # Client.context holds (cadata, cafile, insecure) until the first https connect turns
    # it into an SSLContext (kept for later connections).
    if type(c.context) is not tuple:
        return
    cadata, cafile, insecure = c.context
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cadata is None and cafile:
        with open(cafile, "rb") as f:
            cadata = f.read()
    if cadata:
        ctx.verify_mode = ssl.CERT_REQUIRED
        if isinstance(cadata, str):
            cadata = cadata.encode()
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
    elif insecure:
        ctx.verify_mode = ssl.CERT_NONE
    else:
        raise ValueError("https needs cadata= or cafile= (or insecure=True)")
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
