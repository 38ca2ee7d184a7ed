# A user agent built on Net::SIP::Simple (Debian's libnet-sip-perl), started by
# tests/peers/netsip_peer.py.
#
#   perl netsip_ua.pl echo HOST
#       binds UDP HOST:0, prints "ready PORT", answers every call and sends each RTP packet
#       back as it came (Net::SIP's recv_echo); prints "established" and "cleanup" per call
#   perl netsip_ua.pl call HOST URI PCMU_FILE DIGITS SECONDS
#       calls URI, sends PCMU_FILE (raw 8 kHz mu-law) as its audio, after 1 s the DIGITS as
#       RFC 2833 events, and hangs up after SECONDS; prints "established", "digits sent", "end"
#   perl netsip_ua.pl lab-call HOST REGISTRAR DOMAIN USER PASSWORD EXTENSION PCMU_FILE OUT_FILE SECONDS
#       registers USER@DOMAIN at REGISTRAR (host:port, digest), calls EXTENSION through it,
#       sends PCMU_FILE, writes what it hears to OUT_FILE (raw mu-law), hangs up after SECONDS
#       and unregisters; prints "registered", "established", "end"
use strict;
use warnings;
use IO::Socket::IP;
use Net::SIP;

my ($mode, $host, @args) = @ARGV;
die "usage: netsip_ua.pl echo HOST | call HOST URI PCMU_FILE DIGITS SECONDS | lab-call HOST ...\n" if ! $host;
my $sock = IO::Socket::IP->new(Proto => 'udp', LocalHost => $host, LocalPort => 0)
    or die "cannot bind UDP on $host: $!\n";
$| = 1;
my $leg = Net::SIP::Leg->new(sock => $sock);
my $ua;
if ($mode eq 'lab-call') {
    my ($registrar, $domain, $user, $password) = @args;
    $ua = Net::SIP::Simple->new(from => "sip:$user\@$domain", domain => $domain, registrar => $registrar,
                                outgoing_proxy => $registrar, auth => [$user, $password], leg => $leg);
} else {
    $ua = Net::SIP::Simple->new(from => "sip:netsip\@$host", leg => $leg);
}

if ($mode eq 'echo') {
    $ua->listen(init_media => $ua->rtp('recv_echo'),
                cb_established => sub { print "established\n" },
                cb_cleanup => sub { print "cleanup\n" });
    print "ready ", $sock->sockport, "\n";
    $ua->loop;
} elsif ($mode eq 'call') {
    my ($uri, $file, $digits, $seconds) = @args;
    # invite returns once the call is answered (or failed)
    my $call = $ua->invite($uri, init_media => $ua->rtp('send_recv', $file))
        or die "INVITE failed: " . ($ua->error // 'no answer') . "\n";
    print "established\n";
    my $stop;
    $ua->add_timer(1, sub {
        $call->dtmf($digits, methods => 'rfc2833', cb_final => sub { print "digits sent\n" });
    });
    $ua->add_timer($seconds, sub { $stop = 1 });
    $ua->loop(\$stop);
    my $ended;
    $call->bye(cb_final => sub { $ended = 1 });
    $ua->loop(5, \$ended);
    print "end\n";
} elsif ($mode eq 'lab-call') {
    my (undef, $domain, undef, undef, $extension, $file, $out, $seconds) = @args;
    $ua->register(expires => 60) or die "REGISTER failed: " . ($ua->error // 'no answer') . "\n";
    print "registered\n";
    my $call = $ua->invite("sip:$extension\@$domain", init_media => $ua->rtp('send_recv', $file, 1, $out))
        or die "INVITE failed: " . ($ua->error // 'no answer') . "\n";
    print "established\n";
    my $stop;
    $ua->add_timer($seconds, sub { $stop = 1 });
    $ua->loop(\$stop);
    my $ended;
    $call->bye(cb_final => sub { $ended = 1 });
    $ua->loop(5, \$ended);
    $ua->register(expires => 0);
    print "end\n";
} else {
    die "unknown mode $mode\n";
}
