#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian 12 machine (run as root):
# the Debian peers (Kamailio with TLS, SIPp, sipsak, tshark, openssl, dnsmasq as a test DNS server,
# baresip, linphonec and twinkle-console as far-end phones, sngrep, SIPVicious, coturn as a STUN server, iptables for a NAT,
# rtpengine as a media relay, Net::SIP's registrar/proxy and Sofia-SIP's sip-options), the Sippy B2BUA (PyPI) in a virtualenv of its own,
# Chromium for the web tests, and the package with its test extras (which include playwright; its own
# browser download, `playwright install`, is never run: the tests use /usr/bin/chromium).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v kamailio >/dev/null 2>&1 || need_apt+=(kamailio)
[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so ] || ls /usr/lib/*/kamailio/modules/tls.so >/dev/null 2>&1 || need_apt+=(kamailio-tls-modules)
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
command -v sipsak >/dev/null 2>&1 || need_apt+=(sipsak)
command -v tshark >/dev/null 2>&1 || need_apt+=(tshark)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need_apt+=(dnsmasq-base)
command -v baresip >/dev/null 2>&1 || need_apt+=(baresip)
command -v linphonec >/dev/null 2>&1 || need_apt+=(linphone-cli)
command -v twinkle-console >/dev/null 2>&1 || need_apt+=(twinkle-console)
command -v gdb >/dev/null 2>&1 || need_apt+=(gdb)  # a stuck peer's thread stacks in a failure message (twinkle_peer.py)
command -v sngrep >/dev/null 2>&1 || need_apt+=(sngrep)  # reads our pcapng files back (test_pcap_sngrep.py)
command -v svcrack >/dev/null 2>&1 || need_apt+=(sipvicious)  # scans the lab (test_lab_sipvicious.py)
command -v turnserver >/dev/null 2>&1 || need_apt+=(coturn)  # the STUN server (test_phone_stun_nat.py)
ls /usr/lib/*/kamailio/modules/presence_mwi.so >/dev/null 2>&1 || need_apt+=(kamailio-presence-modules)  # MWI notifier
ls /usr/lib/*/kamailio/modules/websocket.so >/dev/null 2>&1 || need_apt+=(kamailio-websocket-modules)  # SIP over WebSocket (test_sip_websocket.py)
ls /usr/lib/*/kamailio/modules/outbound.so >/dev/null 2>&1 || need_apt+=(kamailio-outbound-modules)  # SIP outbound, RFC 5626 (test_sip_outbound.py)
ls /usr/lib/*/kamailio/modules/secsipid.so >/dev/null 2>&1 || need_apt+=(kamailio-secsipid-modules)  # STIR/SHAKEN verifier and signer (test_phone_identity.py)
command -v secsipidx >/dev/null 2>&1 || need_apt+=(secsipidx)  # STIR/SHAKEN PASSporT signer and checker
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)  # the NAT in test namespaces (tests/netns.py)
command -v rtpengine >/dev/null 2>&1 || need_apt+=(rtpengine-daemon)  # media relay behind Kamailio (test_phone_rtpengine.py)
[ -e /usr/share/perl5/Net/SIP.pm ] || need_apt+=(libnet-sip-perl)  # Net::SIP's registrar and proxy, a second server stack (test_netsip.py)
command -v sip-options >/dev/null 2>&1 || need_apt+=(sofia-sip-bin)  # Sofia-SIP's OPTIONS client (test_sip_listen_cli.py)
[ -x /usr/lib/nagios/plugins/negate ] || need_apt+=(monitoring-plugins-basic)  # negate: runs our --nagios line as a monitor does (test_sip_nagios.py)
# the web tests drive Debian's Chromium through Playwright (pip's playwright, no browser download)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
# PortAudio for the sound card extra (tests use ALSA's file plugin as a card: no hardware needed)
ls /usr/lib/*/libportaudio.so.2 >/dev/null 2>&1 || need_apt+=(libportaudio2)
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)  # builds skinnysip.rtp._g711 (setup.py)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# rtpengine's package enables a system service too: the tests start their own rtpengine, so the
# service is disabled (with systemd) or taken out of the runlevels (without)
if command -v rtpengine >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now rtpengine-daemon.service >/dev/null 2>&1 || true
  fi
  command -v update-rc.d >/dev/null 2>&1 && $SUDO update-rc.d rtpengine-daemon disable >/dev/null 2>&1 || true
fi

# The tests start their own Kamailio on free ports: the package's system service (Debian enables
# and, with systemd, starts it on install) is disabled and stopped, so nothing is left listening on
# 5060. With systemd: disable --now. Without (a container): stop the init script's daemon by its
# pid file only (never by name: a test's Kamailio may be running) and take it out of the runlevels.
if command -v kamailio >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now kamailio.service >/dev/null 2>&1 || true
  fi
  if [ -x /etc/init.d/kamailio ]; then
    for pidfile in /run/kamailio/kamailio.pid /var/run/kamailio/kamailio.pid; do
      [ -s "$pidfile" ] || continue
      $SUDO start-stop-daemon --stop --quiet --oknodo --retry 5 --pidfile "$pidfile" --exec /usr/sbin/kamailio || true
    done
    command -v update-rc.d >/dev/null 2>&1 && $SUDO update-rc.d kamailio disable >/dev/null 2>&1 || true
  fi
fi

# the Sippy B2BUA (PyPI sippy) as a B2BUA between two phones (tests/peers/sippy_peer.py), in its
# own virtualenv so its dependencies stay out of ours
SIPPY_VENV="${SKINNYSIP_SIPPY:-/opt/skinnysip-peers/sippy}"
if [ ! -x "$SIPPY_VENV/bin/b2bua" ]; then
  echo "installing the Sippy B2BUA into $SIPPY_VENV"
  python3 -m venv "$SIPPY_VENV"
  "$SIPPY_VENV/bin/python" -m pip install -q sippy==2.5.0
fi

python3 -m pip install -q -e '.[test]'
