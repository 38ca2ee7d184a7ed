"""RTP (RFC 3550) packets and G.711 (ITU-T G.711) codecs, shared by the SIP and SCCP phones."""
