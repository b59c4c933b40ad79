// WebSocket load for `make bench` (scenario 11), loopback only.
//
//   wsbench server PORT
//       127.0.0.1:PORT answers every upgrade request with a 101 and then echoes
//       every byte it receives (the proxies tunnel the frames without reading
//       them, so an echo of the bytes is an echo of the messages); any other
//       request (a readiness check) gets a 200.
//   wsbench client PORT CONNS SECONDS SIZE
//       CONNS connections to 127.0.0.1:PORT, each upgraded to a WebSocket, then
//       a SIZE-byte masked text message sent and its echo awaited, over and over,
//       for SECONDS (bounded: the run ends at the deadline whatever happens).
//       Prints `WSBENCH messages=N seconds=S errors=E`.
//
// One thread, epoll, non-blocking sockets; built by tools/bench/run.sh.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536

static const char kUpgrade[] =
    "GET /ws HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
static const char kSwitch[] =
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
static const char kOk[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int die(const char* what) {
  perror(what);
  return 1;
}

static struct sockaddr_in loopback(int port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// ---------------------------------------------------------------- server

struct sconn {
  int fd;
  int upgraded;           // the 101 went out
  size_t head;            // bytes of the request head seen so far (before the upgrade)
  char out[BUF];          // echo bytes not written yet
  size_t out_len;
};

static void sclose(int ep, struct sconn* c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  free(c);
}

// Writes what is pending; returns -1 on a broken connection.
static int sflush(int ep, struct sconn* c) {
  while (c->out_len) {
    ssize_t n = write(c->fd, c->out, c->out_len);
    if (n < 0) {
      if (errno != EAGAIN) return -1;
      struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
      epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);  // stop reading until it drained
      return 0;
    }
    memmove(c->out, c->out + n, c->out_len - (size_t)n);
    c->out_len -= (size_t)n;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  return 0;
}

static int serve(int port) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = loopback(port);
  if (bind(lfd, (struct sockaddr*)&a, sizeof a) || listen(lfd, 4096)) return die("wsbench server: bind/listen");
  int ep = epoll_create1(0);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
  printf("wsbench server listening on 127.0.0.1:%d\n", port);
  fflush(stdout);
  struct epoll_event evs[256];
  char in[BUF];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; ++i) {
      struct sconn* c = evs[i].data.ptr;
      if (!c) {
        int fd;
        while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct sconn* nc = calloc(1, sizeof *nc);
          nc->fd = fd;
          struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        }
        continue;
      }
      if (evs[i].events & EPOLLOUT) {
        if (sflush(ep, c) < 0) sclose(ep, c);
        continue;
      }
      ssize_t got = read(c->fd, in, sizeof in - c->out_len);
      if (got <= 0) {
        if (got < 0 && errno == EAGAIN) continue;
        sclose(ep, c);
        continue;
      }
      const char* p = in;
      size_t len = (size_t)got;
      if (!c->upgraded) {
        // The head ends at the first CRLFCRLF; what follows it is already frames.
        const char* end = memmem(in, len, "\r\n\r\n", 4);
        if (!end) {
          if ((c->head += len) > 16384) sclose(ep, c);
          continue;
        }
        p = end + 4;
        if (!memmem(in, (size_t)(end - in), "websocket", 9) && !memmem(in, (size_t)(end - in), "WebSocket", 9)) {
          // Not an upgrade (a proxy's readiness check): a plain 200, the connection kept.
          memcpy(c->out, kOk, sizeof kOk - 1);
          c->out_len = sizeof kOk - 1;
          c->head = 0;
          if (sflush(ep, c) < 0) sclose(ep, c);
          continue;
        }
        memcpy(c->out, kSwitch, sizeof kSwitch - 1);
        c->out_len = sizeof kSwitch - 1;
        c->upgraded = 1;
        len -= (size_t)(p - in);
      }
      memcpy(c->out + c->out_len, p, len);
      c->out_len += len;
      if (sflush(ep, c) < 0) sclose(ep, c);
    }
  }
}

// ---------------------------------------------------------------- client

struct cconn {
  int fd;
  int state;        // 0 connecting/upgrading, 1 awaiting an echo
  size_t got;       // bytes of the current answer (head or echo) read
  char head[4096];
};

static int client(int port, int conns, double seconds, size_t size) {
  // One masked text frame of `size` bytes (payload length in 16 or 64 bits).
  size_t hlen = size < 126 ? 6 : size < 65536 ? 8 : 14;
  size_t flen = hlen + size;
  unsigned char* frame = malloc(flen);
  frame[0] = 0x81;
  if (size < 126) {
    frame[1] = (unsigned char)(0x80 | size);
  } else if (size < 65536) {
    frame[1] = 0x80 | 126;
    frame[2] = (unsigned char)(size >> 8);
    frame[3] = (unsigned char)size;
  } else {
    frame[1] = 0x80 | 127;
    for (int i = 0; i < 8; ++i) frame[2 + i] = (unsigned char)((unsigned long long)size >> (56 - 8 * i));
  }
  const unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
  memcpy(frame + hlen - 4, mask, 4);
  for (size_t i = 0; i < size; ++i) frame[hlen + i] = (unsigned char)('a' + i % 26) ^ mask[i % 4];

  int ep = epoll_create1(0);
  struct cconn* cs = calloc((size_t)conns, sizeof *cs);
  struct sockaddr_in a = loopback(port);
  long errors = 0, messages = 0, open = 0;
  for (int i = 0; i < conns; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    if (connect(fd, (struct sockaddr*)&a, sizeof a)) return die("wsbench client: connect");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (write(fd, kUpgrade, sizeof kUpgrade - 1) != (ssize_t)(sizeof kUpgrade - 1)) return die("wsbench: write");
    cs[i].fd = fd;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    ++open;
  }
  char in[BUF];
  struct epoll_event evs[256];
  double start = now_s(), deadline = start + seconds;
  while (open > 0) {
    double left = deadline - now_s();
    if (left <= 0) break;
    int n = epoll_wait(ep, evs, 256, (int)(left * 1000) + 1);
    for (int i = 0; i < n; ++i) {
      struct cconn* c = evs[i].data.ptr;
      ssize_t got = read(c->fd, in, sizeof in);
      if (got <= 0) {
        ++errors;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        --open;
        continue;
      }
      if (c->state == 0) {
        size_t k = (size_t)got < sizeof c->head - c->got ? (size_t)got : sizeof c->head - c->got;
        memcpy(c->head + c->got, in, k);
        c->got += k;
        if (!memmem(c->head, c->got, "\r\n\r\n", 4)) continue;
        if (strncmp(c->head, "HTTP/1.1 101", 12) != 0) {
          fprintf(stderr, "wsbench: no 101: %.60s\n", c->head);
          return 1;
        }
        c->state = 1;
        c->got = 0;
      } else {
        c->got += (size_t)got;
        if (c->got < flen) continue;
        if (c->got > flen) {   // one message in flight per connection: more is a broken echo
          fprintf(stderr, "wsbench: %zu bytes echoed for a %zu-byte frame\n", c->got, flen);
          return 1;
        }
        ++messages;
        c->got = 0;
      }
      // Blocking write of one frame: it fits the socket buffer, the peer reads.
      if (write(c->fd, frame, flen) != (ssize_t)flen) return die("wsbench: write");
    }
  }
  double took = now_s() - start;
  printf("WSBENCH messages=%ld seconds=%.3f errors=%ld\n", messages, took, errors);
  return 0;
}

int main(int argc, char** argv) {
  if (argc == 3 && strcmp(argv[1], "server") == 0) return serve(atoi(argv[2]));
  if (argc == 6 && strcmp(argv[1], "client") == 0) {
    int conns = atoi(argv[3]);
    double seconds = atof(argv[4]);
    long size = atol(argv[5]);
    if (conns < 1 || conns > 10000 || seconds <= 0 || seconds > 600 || size < 1 || size > 1 << 20) {
      fprintf(stderr, "wsbench client: CONNS 1..10000, SECONDS 0..600, SIZE 1..1048576\n");
      return 2;
    }
    return client(atoi(argv[2]), conns, seconds, (size_t)size);
  }
  fprintf(stderr, "usage: wsbench server PORT | wsbench client PORT CONNS SECONDS SIZE\n");
  return 2;
}
