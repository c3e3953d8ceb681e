"""A tiny authoritative DNS server on loopback for the tests: the zones it is given, over UDP and TCP.

dnspython parses the queries and the zone files and builds the answers: an
answer with the AA flag, NODATA (NOERROR, SOA in the authority section) for a
name that exists without the type asked, NXDOMAIN for one that does not
exist, REFUSED outside its zones. Enough for `mailgw dns check`, pyspf and
dkimpy, which ask one question at a time.
"""

from __future__ import annotations

import socketserver
import struct
import threading

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.zone

LOOPBACK = "127.0.0.1"


def zone_text(origin: str, records: str, serial: int = 1) -> str:
    """A whole zone: a synthetic SOA and NS at `origin` (absolute, with its dot), then `records`."""
    return (
        f"$ORIGIN {origin}\n$TTL 300\n"
        f"@ IN SOA ns.{origin} hostmaster.{origin} {serial} 3600 600 86400 300\n"
        f"@ IN NS ns.{origin}\nns IN A 192.0.2.53\n" + records
    )


class DnsServer:
    """Serves `zones` (origin -> the text of a whole zone) on 127.0.0.1, UDP and TCP on one free port."""

    def __init__(self, zones: dict[str, str]):
        self.zones = {
            dns.name.from_text(origin): dns.zone.from_text(text, origin, relativize=False)
            for origin, text in zones.items()
        }
        self.queries: list[tuple[str, str]] = []
        server = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                sock.sendto(server.answer(data, udp=True), self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self):
                head = self.request.recv(2)
                if len(head) == 2:
                    (length,) = struct.unpack("!H", head)
                    data = b""
                    while len(data) < length:
                        chunk = self.request.recv(length - len(data))
                        if not chunk:
                            return
                        data += chunk
                    reply = server.answer(data)
                    self.request.sendall(struct.pack("!H", len(reply)) + reply)

        for _ in range(20):
            self.udp = socketserver.ThreadingUDPServer((LOOPBACK, 0), Udp)
            self.port = self.udp.server_address[1]
            try:
                self.tcp = socketserver.ThreadingTCPServer((LOOPBACK, self.port), Tcp)
                break
            except OSError:  # the TCP port of that number is taken: another pair
                self.udp.server_close()
        else:
            raise OSError("no free port for both UDP and TCP")
        # A short poll: shutdown() waits up to one poll interval for each of the two servers.
        self.threads = [
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            for s in (self.udp, self.tcp)
        ]

    def __enter__(self) -> DnsServer:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for server in (self.udp, self.tcp):
            server.shutdown()
            server.server_close()

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def answer(self, data: bytes, udp: bool = False) -> bytes:
        query = dns.message.from_wire(data)
        reply = self._reply(query)
        if not udp:
            return reply.to_wire(max_size=65535)
        try:  # over UDP: 512 bytes, or what the client's EDNS says; too big, it retries over TCP (RFC 1035 4.2.1)
            return reply.to_wire(max_size=query.payload if query.edns >= 0 else 512)
        except dns.exception.TooBig:
            reply.answer.clear()
            reply.authority.clear()
            reply.flags |= dns.flags.TC
            return reply.to_wire()

    def _reply(self, query: dns.message.Message) -> dns.message.Message:
        reply = dns.message.make_response(query)
        question = query.question[0]
        self.queries.append((question.name.to_text(), dns.rdatatype.to_text(question.rdtype)))
        origin = max((o for o in self.zones if question.name.is_subdomain(o)), key=len, default=None)
        if origin is None:
            reply.set_rcode(dns.rcode.REFUSED)
            return reply
        zone = self.zones[origin]
        reply.flags |= dns.flags.AA
        node = zone.get_node(question.name)
        if node is None:
            reply.set_rcode(dns.rcode.NXDOMAIN)
            reply.authority.append(zone.find_rrset(origin, "SOA"))
            return reply
        rdataset = node.get_rdataset(question.rdclass, question.rdtype)
        if rdataset is None and question.rdtype != dns.rdatatype.CNAME:
            rdataset = node.get_rdataset(question.rdclass, dns.rdatatype.CNAME)
        if rdataset is None:
            reply.authority.append(zone.find_rrset(origin, "SOA"))
        else:
            rrset = reply.find_rrset(reply.answer, question.name, question.rdclass, rdataset.rdtype, create=True)
            rrset.update(rdataset)
        return reply
