#!/usr/bin/env python3
"""Small network tools for lanparty's end-to-end tests, run inside network
namespaces with `ip netns exec`. Standard library only.

  sniff IFACE SECONDS OUT      write every frame received on IFACE as a hex line to OUT
  inject IFACE HEX [COUNT]     send a raw Ethernet frame COUNT times
  game-server PORT SECONDS     answer UDP "DISCOVER <id>" broadcasts with unicast "HERE <id>"
  listen PORT SECONDS OUT      write every UDP payload received on PORT to OUT
  discover DEV BCAST PORT ID   broadcast "DISCOVER ID" out of DEV, print the first answer
"""
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6


def sniff(iface, seconds, out):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.bind((iface, 0))
    s.settimeout(0.2)
    end = time.time() + float(seconds)
    with open(out, "w") as f:
        f.write("ready\n")
        f.flush()
        while time.time() < end:
            try:
                frame, ancillary, _flags, addr = s.recvmsg(65535, socket.CMSG_SPACE(20))
            except socket.timeout:
                continue
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            # The kernel strips VLAN tags on receive; put them back.
            for level, kind, data in ancillary:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= 20:
                    status, _len, _snap, _mac, _net, tci, tpid = struct.unpack("IIIHHHH", data[:20])
                    if status & TP_STATUS_VLAN_VALID:
                        if not status & TP_STATUS_VLAN_TPID_VALID:
                            tpid = 0x8100
                        frame = frame[:12] + struct.pack("!HH", tpid, tci) + frame[12:]
            f.write(frame.hex() + "\n")
            f.flush()


def inject(iface, hexframe, count=1):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    frame = bytes.fromhex(hexframe)
    for _ in range(int(count)):
        s.send(frame)
        time.sleep(0.01)


# IP_MTU_DISCOVER = IP_PMTUDISC_DO: every datagram leaves with DF set and
# is never fragmented by the sender, so a full-size one proves the path
# carries MTU 1500.
IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2


def game_server(port, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    s.bind(("0.0.0.0", int(port)))
    s.settimeout(0.2)
    end = time.time() + float(seconds)
    print("ready", flush=True)
    while time.time() < end:
        try:
            data, addr = s.recvfrom(2048)
        except socket.timeout:
            continue
        if data.startswith(b"DISCOVER "):
            s.sendto(b"HERE " + data[len(b"DISCOVER "):], addr)


def listen(port, seconds, out):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    s.settimeout(0.2)
    end = time.time() + float(seconds)
    with open(out, "w") as f:
        f.write("ready\n")
        f.flush()
        while time.time() < end:
            try:
                data, addr = s.recvfrom(2048)
            except socket.timeout:
                continue
            f.write("%s %s\n" % (addr[0], data.decode(errors="replace")))
            f.flush()


def discover(dev, bcast, port, ident):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
    s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    s.settimeout(0.5)
    for _ in range(10):
        s.sendto(b"DISCOVER " + ident.encode(), (bcast, int(port)))
        try:
            data, addr = s.recvfrom(2048)
        except socket.timeout:
            continue
        print("%s %s" % (addr[0], data.decode(errors="replace")), flush=True)
        return 0
    print("no answer", flush=True)
    return 1


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "sniff":
        sniff(*args)
    elif cmd == "inject":
        inject(*args)
    elif cmd == "game-server":
        game_server(*args)
    elif cmd == "listen":
        listen(*args)
    elif cmd == "discover":
        sys.exit(discover(*args))
    else:
        sys.exit("unknown command " + cmd)
