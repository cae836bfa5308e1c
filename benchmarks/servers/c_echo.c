/*
 * Baseline: the timestamp echo protocol in C (epoll, one thread), to show
 * how fast the machine and the load generator go.  Each chunk's complete
 * lines are answered with one write; the prefix is built once per second.
 * A client that does not read is not handled (replies beyond the socket
 * buffer are dropped with the connection): this is a measuring stick only.
 *
 * Build: cc -O2 -o c_echo c_echo.c; run: c_echo PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536

typedef struct {
    int fd;
    size_t len;
    char in[BUF];
} conn_t;

static char prefix[64];
static size_t prefix_len;
static time_t prefix_at = -1;

static void refresh_prefix(void) {
    time_t now = time(NULL);
    if (now == prefix_at) return;
    char stamp[32];
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%a %b %e %H:%M:%S %Y", &tm);
    prefix_len = (size_t)snprintf(prefix, sizeof prefix, "[%s] ", stamp);
    prefix_at = now;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 21567;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 128) < 0) {
        perror("listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &e);
    char *out = malloc(BUF * 32);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    c = malloc(sizeof *c);
                    c->fd = fd;
                    c->len = 0;
                    struct epoll_event ce = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce);
                }
                continue;
            }
            ssize_t r = recv(c->fd, c->in + c->len, BUF - c->len, 0);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                close(c->fd);
                free(c);
                continue;
            }
            c->len += (size_t)r;
            refresh_prefix();
            size_t start = 0, o = 0;
            char *nl;
            while ((nl = memchr(c->in + start, '\n', c->len - start))) {
                size_t end = (size_t)(nl - c->in) + 1;
                memcpy(out + o, prefix, prefix_len);
                o += prefix_len;
                memcpy(out + o, c->in + start, end - start);
                o += end - start;
                start = end;
            }
            memmove(c->in, c->in + start, c->len - start);
            c->len -= start;
            if (c->len == BUF) c->len = 0; /* an over-long line: drop it */
            if (o && send(c->fd, out, o, MSG_NOSIGNAL) != (ssize_t)o) {
                close(c->fd);
                free(c);
            }
        }
    }
}
