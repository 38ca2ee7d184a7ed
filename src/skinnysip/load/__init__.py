"""``skinnysip load``: SIP load generation on the same core as the probes and phones.

- :mod:`.scenarios`: what one attempt is (OPTIONS, REGISTER with digest and unregister,
  MESSAGE, a call with media, a user's ``async def scenario(phone, index)``), :class:`LoadConfig`.
- :mod:`.runner`: the rate/limit/count/duration loop (:class:`LoadRunner`), the driver's
  :class:`Monitor` and the final :func:`summary`.
- :mod:`.stats`: mergeable :class:`Counters` and response-time histograms.
- :mod:`.report`: the per-interval CSV (SIPp ``-trace_stat`` names) and the live view.
- :mod:`.distributed`: the same run over Ray actors (optional extra ``distributed``).
"""
