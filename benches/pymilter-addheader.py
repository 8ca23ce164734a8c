#!/usr/bin/python3
# pymilter-addheader.py -- the yardstick of benches/postfix-e2e.sh: the simplest useful milter in
# Python on Debian's python3-milter (pymilter on libmilter), adding one header to every message.
#
#   /usr/bin/python3 benches/pymilter-addheader.py unix:/path/to/milter.sock
#   /usr/bin/python3 benches/pymilter-addheader.py inet:PORT@127.0.0.1
#   ... --read   also take every header and the body (each callback a no-op), as a milter that
#                looks at the message must
#
# Without --read it implements envfrom and eom only: pymilter then negotiates that Postfix sends
# no connect, HELO, RCPT, DATA, header, end-of-header or body event (P_NO*), so per message it
# sees MAIL and end of message, and adds "X-Bench-Pymilter: seen". It prints one line when it
# listens, and the protocol it negotiated with the first connection, then nothing.
import os
import sys

import Milter

READ = "--read" in sys.argv[2:]


class AddHeader(Milter.Base):
    negotiated = False

    def negotiate(self, opts):
        status = super().negotiate(opts)
        if not AddHeader.negotiated:
            AddHeader.negotiated = True
            print("negotiated: actions 0x%x, protocol 0x%x" % (self._actions, self._protocol), flush=True)
        return status

    def envfrom(self, mailfrom, *esmtp):
        return Milter.CONTINUE

    def eom(self):
        self.addheader("X-Bench-Pymilter", "seen")
        return Milter.ACCEPT


class AddHeaderRead(AddHeader):
    def header(self, name, value):
        return Milter.CONTINUE

    def eoh(self):
        return Milter.CONTINUE

    def body(self, chunk):
        return Milter.CONTINUE


def main():
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: pymilter-addheader.py unix:PATH|inet:PORT@HOST [--read]")
    sock = sys.argv[1]
    if sock.startswith("unix:"):
        # smtpd runs as user postfix: the socket must be writable by others (it sits in a 0755
        # directory of the benchmark's temp dir).
        os.umask(0)
    Milter.factory = AddHeaderRead if READ else AddHeader
    Milter.set_flags(Milter.ADDHDRS)
    print("pymilter-addheader listening on %s%s" % (sock, " (--read)" if READ else ""), flush=True)
    # 240 s: libmilter's timeout for a silent MTA connection.
    Milter.runmilter("pymilter-addheader", sock, 240)


if __name__ == "__main__":
    main()
