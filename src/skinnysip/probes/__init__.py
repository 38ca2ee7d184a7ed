"""Operations: one function per user action, each returning a typed result with the wire trace."""
