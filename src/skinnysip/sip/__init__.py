"""SIP protocol core (sans-IO): messages, URIs, headers, digest, transactions. RFC 3261."""
