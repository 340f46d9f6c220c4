// Command stunload loads a STUN or TURN server so that icebox and coturn
// can be compared on the same machine in the same run: the ratio holds
// where absolute figures on a shared machine do not. With -pid it reads
// the server's CPU time (user and system, all threads) from /proc and
// reports server CPU-µs per operation, the figure to compare.
//
//	stunload -mode binding -addr 127.0.0.1:3478 -clients 8 -window 32
//	stunload -mode binding -tcp -clients 8 -window 32
//	stunload -mode channel -secret S -allocs 16 -window 16 -pid 1234
//	stunload -mode send    -secret S -allocs 64 -window 1
//	stunload -mode channel -secret S -tcp
//	stunload -mode alloc   -secret S -allocs 4
//	stunload -mode hold    -secret S -allocs 5000 -pid 1234
//
// Modes: binding (a STUN Binding request answered), channel (a ChannelData
// round trip: client to relay to an echoing peer and back), send (the same
// with Send and Data indications), alloc (an allocation created and
// deleted), hold (allocations created and held for -duration: with -pid,
// the server's resident memory per allocation). Each flow keeps window
// operations in flight and starts a new one per answer, reading and
// writing in batches (recvmmsg and sendmmsg over UDP, several frames a
// write over TCP) so that stunload is not what limits the rate; a window
// that goes quiet for -timeout counts what was in flight as lost and is
// refilled. Answers that arrive after that are taken back from lost and
// counted as late: nothing was dropped, a process stalled. The peers are
// sockets of stunload's own
// on -peer-ip, so the server must allow relaying there. Only send it to
// servers you run yourself, on addresses you own.
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"
	"golang.org/x/net/ipv4"
)

type options struct {
	mode     string
	addr     string
	flows    int
	window   int
	size     int
	duration time.Duration
	timeout  time.Duration
	secret   string
	realm    string
	tcp      bool
	peerIP   string
	pid      int
}

func main() {
	var o options
	flag.StringVar(&o.mode, "mode", "binding", "binding, channel, send, alloc or hold")
	flag.StringVar(&o.addr, "addr", "127.0.0.1:3478", "server address (host:port)")
	flag.IntVar(&o.flows, "clients", 8, "client sockets (binding)")
	flag.IntVar(&o.flows, "allocs", 8, "allocations, one client socket each (TURN modes)")
	flag.IntVar(&o.window, "window", 32, "operations in flight per socket")
	flag.IntVar(&o.size, "size", 160, "payload bytes per relayed message")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "how long to load")
	flag.DurationVar(&o.timeout, "timeout", 200*time.Millisecond, "refill a window silent for this long")
	flag.StringVar(&o.secret, "secret", "", "TURN REST API shared secret (TURN modes)")
	flag.StringVar(&o.realm, "realm", "icebox", "TURN realm")
	flag.BoolVar(&o.tcp, "tcp", false, "reach the server over TCP")
	flag.StringVar(&o.peerIP, "peer-ip", "127.0.0.1", "address of the echoing peers")
	flag.IntVar(&o.pid, "pid", 0, "server process whose CPU time to report per operation")
	flag.Parse()
	res, err := load(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stunload:", err)
		os.Exit(1)
	}
	fmt.Println(res)
}

// flow is one socket's load: prepared before the clock starts, run
// until stop, returning operations completed, lost and late (see window).
type flow interface {
	run(stop time.Time) (done, lost, late int64)
	close()
}

// result is what one run of stunload measured.
type result struct {
	o                   options
	flows               int
	ops, lost, late     int64
	elapsed, serverCPU  time.Duration
	loadCPU             time.Duration // stunload's own: near elapsed, stunload limits the rate
	rssBefore, rssAfter int64         // KiB, mode hold
}

func (r result) String() string {
	o := r.o
	if o.mode == "hold" {
		s := fmt.Sprintf("mode=hold allocations=%d", r.flows)
		if o.pid != 0 {
			s += fmt.Sprintf(" server_rss_kib=%d->%d server_kib/alloc=%.2f", r.rssBefore, r.rssAfter, float64(r.rssAfter-r.rssBefore)/float64(r.flows))
		}
		return s
	}
	transport := "udp"
	if o.tcp {
		transport = "tcp"
	}
	s := fmt.Sprintf("mode=%s transport=%s addr=%s flows=%d window=%d size=%d duration=%s ops=%d ops/s=%.0f lost=%d late=%d",
		o.mode, transport, o.addr, r.flows, o.window, o.size, o.duration, r.ops, float64(r.ops)/r.elapsed.Seconds(), r.lost, r.late)
	// How busy stunload itself was, per cent of one core: near 100 it is
	// what limits the rate, and the figures say less about the server.
	s += fmt.Sprintf(" load_cpu_s=%.2f load_busy=%.0f%%", r.loadCPU.Seconds(), 100*r.loadCPU.Seconds()/r.elapsed.Seconds())
	if o.pid != 0 && r.ops > 0 {
		s += fmt.Sprintf(" server_cpu_s=%.2f server_cpu_us/op=%.2f", r.serverCPU.Seconds(), float64(r.serverCPU.Microseconds())/float64(r.ops))
	}
	return s
}

// load runs o's load against the server and measures it.
func load(o options) (result, error) {
	res := result{o: o}
	if o.mode != "binding" && o.secret == "" {
		return res, errors.New("-secret is needed for TURN modes")
	}
	if o.window < 1 {
		return res, errors.New("-window must be at least 1")
	}
	if (o.mode == "channel" || o.mode == "send") && o.size < 4 {
		// The payload's first four bytes carry the window number that
		// tells a late answer from a current one.
		return res, errors.New("-size must be at least 4 in channel and send modes")
	}
	flows := make([]flow, 0, o.flows)
	defer func() {
		for _, f := range flows {
			f.close()
		}
	}()
	var err error
	if res.rssBefore, err = rss(o.pid); err != nil {
		return res, err
	}
	for i := range o.flows {
		f, err := newFlow(o, i)
		if err != nil {
			return res, fmt.Errorf("flow %d: %w", i, err)
		}
		flows = append(flows, f)
	}
	res.flows = len(flows)
	if o.mode == "hold" {
		time.Sleep(o.duration) // let the server settle; the allocations stay
		res.rssAfter, err = rss(o.pid)
		return res, err
	}
	cpu0, self0, err := cpuTimes(o.pid)
	if err != nil {
		return res, err
	}
	start := time.Now()
	stop := start.Add(o.duration)
	var done, lost, late atomic.Int64
	var wg sync.WaitGroup
	for _, f := range flows {
		wg.Go(func() {
			d, l, s := f.run(stop)
			done.Add(d)
			lost.Add(l)
			late.Add(s)
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	cpu1, self1, err := cpuTimes(o.pid)
	if err != nil {
		return res, err
	}
	res.loadCPU = self1 - self0
	res.ops, res.lost, res.late, res.serverCPU = done.Load(), lost.Load(), late.Load(), cpu1-cpu0
	return res, nil
}

func newFlow(o options, i int) (flow, error) {
	switch o.mode {
	case "binding":
		c, err := net.Dial(o.network(), o.addr)
		if err != nil {
			return nil, err
		}
		return &bindingFlow{conn: c, o: o, t: newTransport(c, nil, o.window)}, nil
	case "channel", "send":
		return newRelayFlow(o)
	case "alloc":
		return &allocFlow{o: o}, nil
	case "hold":
		c, err := dialTURN(o.network(), o.addr, []byte(o.secret), o.realm)
		if err != nil {
			return nil, err
		}
		if _, err := c.allocate(); err != nil {
			c.Close()
			return nil, err
		}
		return &heldFlow{c}, nil
	}
	return nil, fmt.Errorf("unknown -mode %q", o.mode)
}

// rss is pid's resident memory in KiB (VmRSS).
func rss(pid int) (int64, error) {
	if pid == 0 {
		return 0, nil
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("server memory: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, errors.New("server memory: no VmRSS")
}

// heldFlow is an allocation held open (mode hold).
type heldFlow struct{ c *turnClient }

func (f *heldFlow) run(time.Time) (int64, int64, int64) { return 0, 0, 0 }
func (f *heldFlow) close()                              { f.c.release(); f.c.Close() }

// cpuTimes is the CPU time used so far by the server (pid) and by this
// load generator, read together so that each run brackets both alike.
func cpuTimes(pid int) (server, self time.Duration, err error) {
	if server, err = cpuTime(pid); err != nil {
		return 0, 0, err
	}
	self, err = cpuTime(os.Getpid())
	return server, self, err
}

// cpuTime is the user plus system CPU time pid has used, all threads.
func cpuTime(pid int) (time.Duration, error) {
	if pid == 0 {
		return 0, nil
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("server CPU time: %w", err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("server CPU time: short /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}

// newTransport batches a flow's requests and answers on c; r, if not nil,
// is what already reads a stream c.
func newTransport(c net.Conn, r *bufio.Reader, window int) transport {
	if uc, ok := c.(*net.UDPConn); ok {
		return newDatagrams(uc, window)
	}
	if r == nil {
		r = newStreamReader(c)
	}
	return &frames{conn: c, r: r}
}

const magicCookie = 0x2112A442

// bindingFlow sends STUN Binding requests, each with a fresh transaction
// ID: the window's number, then a count.
type bindingFlow struct {
	conn net.Conn
	o    options
	t    transport
	sent uint64
}

func (f *bindingFlow) run(stop time.Time) (int64, int64, int64) {
	return window(stop, f.o.window, f.o.timeout, f.t, f)
}

func (f *bindingFlow) appendRequest(b []byte, epoch uint32) []byte {
	f.sent++
	b = binary.BigEndian.AppendUint16(b, 0x0001) // Binding request
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint32(b, magicCookie)
	b = binary.BigEndian.AppendUint32(b, epoch)
	return binary.BigEndian.AppendUint64(b, f.sent)
}

func (f *bindingFlow) epochOf(b []byte) (uint32, bool) {
	if len(b) < 20 || binary.BigEndian.Uint16(b) != 0x0101 || binary.BigEndian.Uint32(b[4:]) != magicCookie {
		return 0, false
	}
	return binary.BigEndian.Uint32(b[8:]), true
}

func (f *bindingFlow) close() { f.conn.Close() }

// relayFlow is one allocation relaying to its own echoing peer.
type relayFlow struct {
	o     options
	c     *turnClient
	peer  *net.UDPConn
	relay netip.AddrPort
	msg   []byte // what the client sends
	tagAt int    // offset in msg of the payload's first four bytes; 0: too short to tag
	reply uint16 // first two bytes of what it expects back: channel or Data indication
	t     transport
	epoch uint32 // the window msg is tagged for
}

const channel = 0x4000

// network is how TURN flows reach the server.
func (o options) network() string {
	if o.tcp {
		return "tcp4"
	}
	return "udp4"
}

func newRelayFlow(o options) (*relayFlow, error) {
	c, err := dialTURN(o.network(), o.addr, []byte(o.secret), o.realm)
	if err != nil {
		return nil, err
	}
	peer, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(o.peerIP), 0)))
	if err != nil {
		c.Close()
		return nil, err
	}
	f := &relayFlow{o: o, c: c, peer: peer, t: newTransport(c.conn, c.r, o.window)}
	if err := f.setUp(); err != nil {
		f.close()
		return nil, err
	}
	go f.echo()
	return f, nil
}

func (f *relayFlow) setUp() error {
	var err error
	if f.relay, err = f.c.allocate(); err != nil {
		return err
	}
	peer := f.peer.LocalAddr().(*net.UDPAddr).AddrPort()
	payload := make([]byte, f.o.size)
	if f.o.mode == "channel" {
		if err := f.c.channelBind(channel, peer); err != nil {
			return err
		}
		f.msg = binary.BigEndian.AppendUint16(nil, channel)
		f.msg = binary.BigEndian.AppendUint16(f.msg, uint16(len(payload)))
		f.msg = append(f.msg, payload...)
		for f.c.stream && len(f.msg)%4 != 0 {
			f.msg = append(f.msg, 0)
		}
		f.reply = channel
		if len(payload) >= 4 {
			f.tagAt = 4
		}
		return nil
	}
	if err := f.c.createPermission(peer); err != nil {
		return err
	}
	send, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		peerAttr(peer), rawAttr(stun.AttrData, payload), stun.Fingerprint)
	if err != nil {
		return err
	}
	f.msg = send.Raw
	if p := payloadOf(f.msg); len(p) >= 4 {
		f.tagAt = cap(f.msg) - cap(p) // p's offset in msg
	}
	f.reply = stun.NewType(stun.MethodData, stun.ClassIndication).Value()
	return nil
}

// echo sends every datagram back where it came from: the relay. It
// reads and writes in batches (recvmmsg, sendmmsg), so that the load
// generator is not what limits the rate.
func (f *relayFlow) echo() {
	pc := ipv4.NewPacketConn(f.peer)
	in, out := batch(64), sendBatch(64)
	for {
		n, err := pc.ReadBatch(in, 0)
		if err != nil {
			return
		}
		for i := range n {
			out[i].Buffers[0] = in[i].Buffers[0][:in[i].N]
			out[i].Addr = in[i].Addr
		}
		if writeAll(pc, out[:n]) != nil {
			return
		}
	}
}

// batch is n messages with a buffer each, for ReadBatch.
func batch(n int) []ipv4.Message {
	ms := make([]ipv4.Message, n)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	return ms
}

// sendBatch is n messages with room for one buffer each, for WriteBatch:
// setting Buffers[0] allocates nothing, building a Buffers slice would.
func sendBatch(n int) []ipv4.Message {
	ms := make([]ipv4.Message, n)
	for i := range ms {
		ms[i].Buffers = make([][]byte, 1)
	}
	return ms
}

// writeAll sends every message, in as few sendmmsg calls as the kernel
// allows.
func writeAll(pc *ipv4.PacketConn, ms []ipv4.Message) error {
	for len(ms) > 0 {
		n, err := pc.WriteBatch(ms, 0)
		if err != nil {
			return err
		}
		ms = ms[n:]
	}
	return nil
}

func (f *relayFlow) run(stop time.Time) (int64, int64, int64) {
	return window(stop, f.o.window, f.o.timeout, f.t, f)
}

// appendRequest appends msg, tagged with epoch: each window's operations
// carry its number in their first four payload bytes.
func (f *relayFlow) appendRequest(b []byte, epoch uint32) []byte {
	if epoch != f.epoch {
		f.epoch = epoch
		f.tag(epoch)
	}
	return append(b, f.msg...)
}

func (f *relayFlow) epochOf(b []byte) (uint32, bool) {
	if len(b) < 4 || binary.BigEndian.Uint16(b) != f.reply {
		return 0, false
	}
	if p := payloadOf(b); f.tagAt > 0 && len(p) >= 4 {
		return binary.BigEndian.Uint32(p), true
	}
	return f.epoch, true // too short to tag: every answer is the current window's
}

// tag writes the window number into the operations sent from now on.
func (f *relayFlow) tag(epoch uint32) {
	if f.tagAt == 0 {
		return
	}
	binary.BigEndian.PutUint32(f.msg[f.tagAt:], epoch)
	if f.o.mode == "send" {
		// The FINGERPRINT, last, covers the data (RFC 8489 §14.7).
		fp := f.msg[len(f.msg)-4:]
		binary.BigEndian.PutUint32(fp, stun.FingerprintValue(f.msg[:len(f.msg)-8]))
	}
}

// payloadOf returns the payload of a ChannelData message or the DATA of a
// Data indication, or nil.
func payloadOf(b []byte) []byte {
	if b[0]>>6 == 1 {
		return b[4:]
	}
	for off := 20; off+4 <= len(b); {
		t, n := binary.BigEndian.Uint16(b[off:]), int(binary.BigEndian.Uint16(b[off+2:]))
		if off+4+n > len(b) {
			return nil
		}
		if t == uint16(stun.AttrData) {
			return b[off+4 : off+4+n]
		}
		off += 4 + (n+3)&^3
	}
	return nil
}

// close deletes the allocation, so that a later run's socket that gets
// the same port is not taken for this client (437).
func (f *relayFlow) close() {
	f.peer.Close()
	f.c.release()
	f.c.Close()
}

// allocFlow creates and deletes allocations, one at a time, each on a
// fresh connection (a 5-tuple just released may be held briefly).
type allocFlow struct {
	o   options
	err error
}

func (f *allocFlow) run(stop time.Time) (done, lost, late int64) {
	for time.Now().Before(stop) {
		if err := f.once(); err != nil {
			lost++
			if f.err == nil {
				f.err = err
			}
			continue
		}
		done++
	}
	return done, lost, 0
}

func (f *allocFlow) once() error {
	c, err := dialTURN(f.o.network(), f.o.addr, []byte(f.o.secret), f.o.realm)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	if _, err := c.allocate(); err != nil {
		return fmt.Errorf("allocate: %w", err)
	}
	if err := c.release(); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	return nil
}

// close says why the flow's first lost operation was lost: a count alone
// cannot tell a refusal from a timeout.
func (f *allocFlow) close() {
	if f.err != nil {
		fmt.Fprintln(os.Stderr, "stunload: alloc flow: first lost operation:", f.err)
	}
}
