/*
 * loadgen: an epoll load generator for timestamp echo servers.
 *
 * Every reply is checked: it must start with '[', and end with "] " + the
 * payload that was sent + the request's line ending ("\r\n" or "\n").  With
 * --format repr (the original socketserver server under Python 3 only) the
 * reply is "[...] b'PAYLOAD\\r\\n'" with no line ending and the server closes.
 *
 * Scenarios (one JSON line of results on stdout):
 *   pipelined  --conns N --inflight K: N connections, K lines in flight each
 *   latency    the same with N=1 K=1, plus p50/p99 round-trip times
 *   cpr        --conns C concurrent clients: connect, send a line, read the
 *              reply, close, again (the original client's pattern)
 *   idle       --stages 1000,10000: open connections (one line exchanged on
 *              each), print a JSON line per stage, then wait for a line on
 *              stdin before the next stage (and before exiting)
 *
 * Build: cc -O2 -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LINE_SIZE 32 /* bytes per request line, terminator included */
#define RBUF 65536

enum { PIPE, LAT, CPR, IDLE };
enum { FMT_LINE, FMT_REPR };

typedef struct {
    int fd;
    int id;
    int alive;
    int connecting;
    uint64_t sent;     /* lines sent */
    uint64_t received; /* replies checked */
    char *out;         /* unsent request bytes */
    size_t out_len, out_cap;
    char *in;          /* unparsed reply bytes */
    size_t in_len;
    uint64_t sent_ns;  /* when the oldest outstanding line was sent (K=1) */
    int owed;          /* lines to send once the hold ends */
} conn_t;

static const char *host = "127.0.0.1";
static int port = 21567;
static int scenario = PIPE;
static int nconns = 50, inflight = 16, fmt = FMT_LINE;
static double duration = 3.0, warmup = 1.0;
static char stages[256] = "1000,10000";
static int epfd;
static conn_t *conns;
static uint64_t errors, replies, conn_done;
static int measuring;
static int holding; /* while connecting: answered connections wait, so the server only accepts */
static uint64_t *lat;
static size_t lat_n, lat_cap;
static char first_error[200];

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void error_at(conn_t *c, const char *what) {
    errors++;
    if (!first_error[0]) snprintf(first_error, sizeof first_error, "conn %d: %s", c ? c->id : -1, what);
}

/* The payload of line number seq on connection id: 30 or 31 bytes. */
static size_t payload(int id, uint64_t seq, int crlf, char *buf) {
    size_t n = LINE_SIZE - (crlf ? 2 : 1);
    char tmp[64];
    int len = snprintf(tmp, sizeof tmp, "c%d:s%llu:", id, (unsigned long long)seq);
    memset(buf, 'x', n);
    memcpy(buf, tmp, (size_t)len < n ? (size_t)len : n);
    return n;
}

static int uses_crlf(conn_t *c) { return fmt == FMT_REPR || scenario == CPR ? 1 : c->id & 1; }

static void queue_line(conn_t *c) {
    if (c->out_len + LINE_SIZE > c->out_cap) {
        c->out_cap = c->out_cap ? c->out_cap * 2 : 1024;
        c->out = realloc(c->out, c->out_cap);
    }
    int crlf = uses_crlf(c);
    size_t n = payload(c->id, c->sent, crlf, c->out + c->out_len);
    memcpy(c->out + c->out_len + n, crlf ? "\r\n" : "\n", crlf ? 2 : 1);
    c->out_len += LINE_SIZE;
    c->sent++;
}

static void set_events(conn_t *c, uint32_t ev) {
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
}

static int flush_out(conn_t *c) {
    while (c->out_len) {
        ssize_t w = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) {
                set_events(c, EPOLLIN | EPOLLOUT);
                return 0;
            }
            return -1;
        }
        memmove(c->out, c->out + w, c->out_len - w);
        c->out_len -= w;
    }
    if (c->sent_ns == 0) c->sent_ns = now_ns();
    return 0;
}

static int open_conn(conn_t *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    {
        /* Connect-per-request leaves a TIME_WAIT socket per request on our
         * side; spread connections over many loopback source addresses so
         * connect() never has to hunt for a free ephemeral port (which, not
         * the server, would then set the pace). */
        static unsigned next_source;
        struct sockaddr_in src = {.sin_family = AF_INET};
        unsigned k = next_source++ % 1000;
        src.sin_addr.s_addr = htonl((127u << 24) | (1u << 16) | ((k / 250) << 8) | (k % 250 + 1));
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        bind(c->fd, (struct sockaddr *)&src, sizeof src);
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    c->alive = 1;
    c->connecting = 1;
    c->in_len = 0;
    c->out_len = 0;
    c->sent = c->received = 0;
    c->sent_ns = 0;
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->alive = 0;
        return -1;
    }
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &e);
    return 0;
}

/* At the end of a run: close without leaving TIME_WAIT sockets behind. */
static void abort_all(void) {
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    for (int i = 0; i < nconns; i++)
        if (conns[i].alive) {
            setsockopt(conns[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(conns[i].fd);
            conns[i].alive = 0;
        }
}

static void close_conn(conn_t *c) {
    if (!c->alive) return;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->alive = 0;
}

/* Check one reply (without its line ending for FMT_LINE). */
static int check_reply(conn_t *c, const char *r, size_t len, int crlf_seen) {
    char want[64];
    int crlf = uses_crlf(c);
    size_t n = payload(c->id, c->received, crlf, want);
    if (len < 3 || r[0] != '[') return -1;
    if (fmt == FMT_REPR) {
        /* [ts] b'PAYLOAD\r\n' */
        size_t tail = n + 9; /* "] b'" + payload + "\\r\\n'" */
        if (len < tail + 1) return -1;
        const char *p = r + len - tail;
        if (memcmp(p, "] b'", 4) || memcmp(p + 4, want, n) || memcmp(p + 4 + n, "\\r\\n'", 5)) return -1;
        return 0;
    }
    if (crlf_seen != crlf) return -1;
    if (len < n + 3) return -1;
    const char *p = r + len - n - 2;
    if (memcmp(p, "] ", 2) || memcmp(p + 2, want, n)) return -1;
    return 0;
}

/* Parse complete replies; return how many were good, -1 on a bad one. */
static int parse_replies(conn_t *c) {
    int good = 0;
    size_t start = 0;
    for (;;) {
        char *nl = memchr(c->in + start, '\n', c->in_len - start);
        if (!nl) break;
        size_t end = nl - c->in;
        int crlf = end > start && c->in[end - 1] == '\r';
        if (check_reply(c, c->in + start, end - start - crlf, crlf) < 0) {
            error_at(c, "bad reply");
            return -1;
        }
        c->received++;
        good++;
        start = end + 1;
    }
    if (start) {
        memmove(c->in, c->in + start, c->in_len - start);
        c->in_len -= start;
    }
    return good;
}

static void cpr_next(conn_t *c);

static void on_event(conn_t *c, uint32_t ev) {
    if (c->connecting) {
        int err = 0;
        socklen_t l = sizeof err;
        if (ev & (EPOLLERR | EPOLLHUP)) getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (!err && (ev & (EPOLLERR | EPOLLHUP))) err = ECONNRESET;
        if (err) {
            error_at(c, strerror(err));
            close_conn(c);
            if (scenario == CPR) cpr_next(c);
            return;
        }
        c->connecting = 0;
        set_events(c, EPOLLIN);
        int first = scenario == PIPE || scenario == LAT ? inflight : 1;
        for (int i = 0; i < first; i++) queue_line(c);
        c->sent_ns = 0;
        if (flush_out(c) < 0) {
            error_at(c, "send failed");
            close_conn(c);
        }
        return;
    }
    if (ev & EPOLLOUT) {
        if (flush_out(c) < 0) {
            error_at(c, "send failed");
            close_conn(c);
            return;
        }
        if (!c->out_len) set_events(c, EPOLLIN);
    }
    if (!(ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    for (;;) {
        size_t room = RBUF - c->in_len;
        ssize_t r = recv(c->fd, c->in + c->in_len, room, 0);
        if (r < 0) {
            if (errno == EAGAIN) break;
            error_at(c, strerror(errno));
            close_conn(c);
            if (scenario == CPR) cpr_next(c);
            return;
        }
        if (r == 0) {
            if (fmt == FMT_REPR && c->in_len) {
                if (check_reply(c, c->in, c->in_len, 0) < 0) error_at(c, "bad reply");
                else if (measuring) replies++, conn_done++;
            } else {
                error_at(c, "closed by server");
            }
            close_conn(c);
            if (scenario == CPR) cpr_next(c);
            return;
        }
        c->in_len += r;
        int drained = (size_t)r < room;
        if (fmt == FMT_REPR) {
            if (c->in_len >= RBUF) {
                error_at(c, "reply too long");
                close_conn(c);
                cpr_next(c);
                return;
            }
            if (drained) return;
            continue;
        }
        int good = parse_replies(c);
        if (good < 0 || c->in_len >= RBUF) {
            if (good >= 0) error_at(c, "reply too long");
            close_conn(c);
            if (scenario == CPR) cpr_next(c);
            return;
        }
        if (!good) {
            if (drained) return;
            continue;
        }
        if (scenario == LAT && measuring) {
            uint64_t t = now_ns();
            if (lat_n == lat_cap) {
                lat_cap = lat_cap ? lat_cap * 2 : 65536;
                lat = realloc(lat, lat_cap * sizeof *lat);
            }
            lat[lat_n++] = t - c->sent_ns;
        }
        if (measuring) replies += good;
        if (scenario == CPR) {
            if (measuring) conn_done++;
            close_conn(c);
            cpr_next(c);
            return;
        }
        if (scenario == IDLE || holding) {
            c->owed += good;
            if (drained) return;
            continue;
        }
        for (int i = 0; i < good; i++) queue_line(c);
        c->sent_ns = 0;
        if (flush_out(c) < 0) {
            error_at(c, "send failed");
            close_conn(c);
            return;
        }
        if (drained) return;
    }
}

static void cpr_next(conn_t *c) {
    if (open_conn(c) < 0) error_at(c, strerror(errno));
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void loop_for(double seconds) {
    struct epoll_event evs[512];
    uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
    while (now_ns() < end) {
        int n = epoll_wait(epfd, evs, 512, 10);
        for (int i = 0; i < n; i++) on_event(evs[i].data.ptr, evs[i].events);
    }
}

static int count_alive(int upto) {
    int n = 0;
    for (int i = 0; i < upto; i++) n += conns[i].alive;
    return n;
}

static void run_idle(void) {
    /* Open connections in batches so the server's listen backlog never overflows. */
    int opened = 0;
    char *s = stages;
    struct epoll_event evs[512];
    while (*s) {
        int target = atoi(s);
        while (opened < target) {
            int batch_end = opened + 32 < target ? opened + 32 : target;
            for (int i = opened; i < batch_end; i++) {
                conns[i].id = i;
                if (open_conn(&conns[i]) < 0) error_at(&conns[i], strerror(errno));
            }
            uint64_t deadline = now_ns() + 10000000000ull;
            for (;;) {
                int done = 1;
                for (int i = opened; i < batch_end; i++)
                    if (conns[i].alive && conns[i].received < 1) done = 0;
                if (done || now_ns() > deadline) break;
                int n = epoll_wait(epfd, evs, 512, 10);
                for (int i = 0; i < n; i++) on_event(evs[i].data.ptr, evs[i].events);
            }
            opened = batch_end;
        }
        int alive = count_alive(opened);
        printf("{\"scenario\":\"idle\",\"conns\":%d,\"alive\":%d,\"errors\":%llu,\"first_error\":\"%s\"}\n", opened,
               alive, (unsigned long long)errors, first_error);
        fflush(stdout);
        char line[64];
        if (!fgets(line, sizeof line, stdin)) break;
        while (*s && *s != ',') s++;
        if (*s == ',') s++;
    }
}

int main(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--host")) host = v;
        else if (!strcmp(k, "--port")) port = atoi(v);
        else if (!strcmp(k, "--conns")) nconns = atoi(v);
        else if (!strcmp(k, "--inflight")) inflight = atoi(v);
        else if (!strcmp(k, "--duration")) duration = atof(v);
        else if (!strcmp(k, "--warmup")) warmup = atof(v);
        else if (!strcmp(k, "--stages")) snprintf(stages, sizeof stages, "%s", v);
        else if (!strcmp(k, "--format")) fmt = strcmp(v, "repr") ? FMT_LINE : FMT_REPR;
        else if (!strcmp(k, "--scenario")) {
            scenario = !strcmp(v, "pipelined") ? PIPE : !strcmp(v, "latency") ? LAT : !strcmp(v, "cpr") ? CPR : !strcmp(v, "idle") ? IDLE : -1;
            if (scenario < 0) {
                fprintf(stderr, "unknown scenario %s\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "unknown option %s\n", k);
            return 2;
        }
    }
    if (scenario == LAT) nconns = 1, inflight = 1;
    if (scenario == IDLE) {
        int max = 0;
        for (char *s = stages; *s;) {
            int v = atoi(s);
            if (v > max) max = v;
            while (*s && *s != ',') s++;
            if (*s == ',') s++;
        }
        nconns = max;
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)nconns + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    epfd = epoll_create1(0);
    conns = calloc(nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) {
        conns[i].id = i;
        conns[i].in = malloc(RBUF);
    }
    if (scenario == IDLE) {
        run_idle();
        abort_all();
        return 0;
    }
    /* Connect in batches of 32, so the listen backlog never overflows. */
    holding = scenario != CPR;
    for (int i = 0; i < nconns; i++) {
        if (open_conn(&conns[i]) < 0) error_at(&conns[i], strerror(errno));
        if (scenario != CPR && (i % 100 == 99)) {
            struct epoll_event evs[512];
            uint64_t deadline = now_ns() + 5000000000ull;
            while (now_ns() < deadline) {
                int pending = 0;
                for (int j = i - 31; j <= i; j++)
                    if (conns[j].alive && conns[j].received == 0) pending++;
                if (!pending) break;
                int n = epoll_wait(epfd, evs, 512, 10);
                for (int k = 0; k < n; k++) on_event(evs[k].data.ptr, evs[k].events);
            }
        }
    }
    holding = 0;
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        if (!c->alive || !c->owed) continue;
        for (; c->owed; c->owed--) queue_line(c);
        c->sent_ns = 0;
        if (flush_out(c) < 0) {
            error_at(c, "send failed");
            close_conn(c);
        }
    }
    loop_for(warmup);
    measuring = 1;
    uint64_t t0 = now_ns();
    loop_for(duration);
    measuring = 0;
    double secs = (now_ns() - t0) / 1e9;
    int alive = scenario == CPR ? nconns : count_alive(nconns);
    if (scenario != CPR && alive < nconns) error_at(NULL, "connections lost");
    double p50 = 0, p99 = 0;
    if (lat_n) {
        qsort(lat, lat_n, sizeof *lat, cmp_u64);
        p50 = lat[lat_n / 2] / 1e3;
        p99 = lat[(size_t)(lat_n * 0.99)] / 1e3;
    }
    const char *names[] = {"pipelined", "latency", "cpr", "idle"};
    printf("{\"scenario\":\"%s\",\"conns\":%d,\"inflight\":%d,\"seconds\":%.3f,\"replies\":%llu,\"rate\":%.1f,"
           "\"conn_rate\":%.1f,\"errors\":%llu,\"alive\":%d,\"p50_us\":%.1f,\"p99_us\":%.1f,\"first_error\":\"%s\"}\n",
           names[scenario], nconns, inflight, secs, (unsigned long long)replies, replies / secs, conn_done / secs,
           (unsigned long long)errors, alive, p50, p99, first_error);
    abort_all();
    return 0;
}
