# A registrar and stateless proxy with digest authentication, built on Net::SIP (CPAN, Debian's
# libnet-sip-perl): a SIP stack written apart from ours, Kamailio's and pjsip's. Started by
# tests/peers/netsip_peer.py.
#
#   perl netsip_server.pl HOST DOMAIN USER:PASSWORD...
#
# Binds UDP HOST:0, prints "ready PORT", then one line per request it is given:
#   "seen METHOD"        every request, before authentication
#   "registered USER N"  a REGISTER that passed digest authentication (N: its Expires or 0)
#   "refused METHOD URI" a request to an unregistered user, answered 404 (no DNS lookup)
# REGISTERs are challenged with 401 (realm DOMAIN); other requests go through the stateless
# proxy (which challenges them too), to the contact registered for their Request-URI.
use strict;
use warnings;
use IO::Socket::IP;
use Net::SIP;

package Counter;
sub new { my ($class, $what) = @_; return bless { what => $what }, $class }
sub receive {
    my ($self, $packet) = @_;
    return if ! $packet->is_request;
    if ($self->{what} eq 'seen') {
        print "seen ", $packet->method, "\n";
    } elsif ($packet->method eq 'REGISTER') {
        my ($to) = $packet->get_header('to') =~ m{sip:([^@>;]+)@};
        my $expires = $packet->get_header('expires');
        my ($contact) = $packet->get_header('contact');
        ($expires) = $contact =~ m{;\s*expires=(\d+)}i if ! defined $expires && defined $contact;
        print "registered ", ($to // '?'), " ", ($expires // 0), "\n";
    }
    return;    # on to the next in the chain
}

# After the registrar's rewrite: a request whose Request-URI still names a host (an unregistered
# user@DOMAIN) is answered 404 here, so the proxy never resolves a name in DNS — nothing leaves
# the machine. Registered targets and in-dialog requests carry IP literals and go on.
package LoopbackOnly;
sub new { my ($class, $dispatcher) = @_; return bless { dispatcher => $dispatcher }, $class }
sub receive {
    my ($self, $packet, $leg, $addr) = @_;
    return if ! $packet->is_request || $packet->method eq 'ACK';
    my ($host) = $packet->uri =~ m{^sips?:(?:[^@]*@)?(\[[^\]]+\]|[^:;>]+)}i;
    return if defined $host && $host =~ m{^(?:\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:.]+\])$};
    print "refused ", $packet->method, " ", $packet->uri, "\n";
    $self->{dispatcher}->deliver($packet->create_response('404', 'Not Found'), leg => $leg, dst_addr => $addr);
    return 1;    # handled
}

package main;

my ($host, $domain, @users) = @ARGV;
die "usage: netsip_server.pl HOST DOMAIN USER:PASSWORD...\n" if ! $domain || ! @users;
my %password = map { split /:/, $_, 2 } @users;
my $sock = IO::Socket::IP->new(Proto => 'udp', LocalHost => $host, LocalPort => 0)
    or die "cannot bind UDP on $host: $!\n";
$| = 1;
my $ua = Net::SIP::Simple->new(leg => Net::SIP::Leg->new(sock => $sock));
my $registrar = Net::SIP::Registrar->new(dispatcher => $ua->{dispatcher}, domain => $domain);
$ua->create_chain([
    Counter->new('seen'),
    $ua->create_chain([$ua->create_auth(user2pass => \%password, realm => $domain),
                       Counter->new('registered'), $registrar], methods => ['REGISTER']),
    $registrar,    # rewrites the Request-URI of other requests to the registered contact
    LoopbackOnly->new($ua->{dispatcher}),
    $ua->create_stateless_proxy(auth_user2pass => \%password, auth_realm => $domain),
]);
print "ready ", $sock->sockport, "\n";
$ua->loop;
