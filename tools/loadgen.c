// A load generator for swift-dtm written in C, independent of the coordinator's Swift code:
// it sends gRPC Submits of 2-step sagas (dtmgimp.Dtm/Submit, unique gid each) over nghttp2 client
// sessions, and serves the sagas' branches (busi.Busi/*, an empty answer with grpc-status 0) from
// an nghttp2 server in the same single-threaded epoll loop, so that it costs the shared CPU a few tens of
// microseconds per saga (the report prints it beside the Swift load generator's).
//
// Build (tools/bench-saga does it): cc -O2 -I generated -o loadgen tools/loadgen.c
//   generated/dtmgimp.pb-c.c generated/busi.pb-c.c generated/google/protobuf/empty.pb-c.c -lnghttp2 -lprotobuf-c
// Run:    loadgen HOST:PORT[,HOST:PORT...]|none [CONNECTIONS per coordinator, default 4]
//         ("none" serves the branches only: Submits then fail, there is no one to send them to)
// It prints "busi-port P" once the branch server listens, then reads commands on stdin, one a
// line, and answers each with one "result ..." line:
//   closed N C PREFIX   N Submits (gids PREFIX-0 ... PREFIX-(N-1)), at most C in flight
//   paced R S PREFIX    R Submits per second for S seconds (open loop: latency counts from
//                       each Submit's due time, so a stalled coordinator cannot hide its delay)
//   busi                the number of branch calls served so far
// A result line: result sent=N ok=A failed=F seconds=T p50_ms= p90_ms= p99_ms= max_ms= busi=B
// (failed: any answer but grpc-status 0, e.g. RESOURCE_EXHAUSTED from admission control).
// With LOADGEN_TRACE=FILE in the environment it also writes one line per answered Submit to FILE:
// its due time in seconds since its job began, its latency and how late the load generator itself
// began sending it, both in milliseconds (to tell stalls, where everything due in a window is
// answered at one moment, from scattered slow answers, and the coordinator's from our own).
// Exits at end of input.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "busi.pb-c.h"
#include "dtmgimp.pb-c.h"

#define MAX_EVENTS 64
#define READ_BUFFER 65536

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int epfd;

// ---------------------------------------------------------------------------------------------
// Connections (client sessions to the coordinator, server sessions of the busi)

typedef struct connection {
    int fd;
    nghttp2_session *session;
    int is_server;
    int want_out; // EPOLLOUT registered
    const char *authority;
    int in_flight;
} connection;

static ssize_t send_callback(nghttp2_session *session, const uint8_t *data, size_t length, int flags,
                             void *user_data) {
    (void)session; (void)flags;
    connection *c = user_data;
    ssize_t n = write(c->fd, data, length);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return NGHTTP2_ERR_WOULDBLOCK;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return n;
}

static void update_interest(connection *c) {
    int want = nghttp2_session_want_write(c->session);
    if (want == c->want_out) return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl mod");
    c->want_out = want;
}

static void flush_connection(connection *c) {
    if (nghttp2_session_send(c->session) != 0) {
        fprintf(stderr, "loadgen: nghttp2_session_send failed on fd %d\n", c->fd);
        exit(1);
    }
    update_interest(c);
}

static void set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL, 0);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) die("fcntl");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// ---------------------------------------------------------------------------------------------
// The busi: answers every request with an empty gRPC message and grpc-status 0.

static uint64_t busi_calls;
static const uint8_t empty_grpc_message[5] = {0, 0, 0, 0, 0};

static ssize_t busi_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user_data) {
    (void)source; (void)user_data;
    if (length < sizeof empty_grpc_message) return NGHTTP2_ERR_CALLBACK_FAILURE;
    memcpy(buf, empty_grpc_message, sizeof empty_grpc_message);
    *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    static const nghttp2_nv trailers[] = {
        {(uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, NGHTTP2_NV_FLAG_NONE},
    };
    if (nghttp2_submit_trailer(session, stream_id, trailers, 1) != 0) return NGHTTP2_ERR_CALLBACK_FAILURE;
    return sizeof empty_grpc_message;
}

static int busi_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
    (void)user_data;
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        static const nghttp2_nv headers[] = {
            {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
        };
        nghttp2_data_provider body = {.read_callback = busi_body};
        busi_calls++;
        if (nghttp2_submit_response(session, frame->hd.stream_id, headers, 2, &body) != 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static nghttp2_session_callbacks *server_callbacks;

static void accept_busi(int listener) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            die("accept");
        }
        set_nonblocking(fd);
        connection *c = calloc(1, sizeof *c);
        if (!c) die("calloc");
        c->fd = fd;
        c->is_server = 1;
        if (nghttp2_session_server_new(&c->session, server_callbacks, c) != 0) die("server session");
        nghttp2_settings_entry settings[] = {
            {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100000},
            {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 24},
        };
        nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings, 2);
        nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, 1 << 30);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl add");
        flush_connection(c);
    }
}

// ---------------------------------------------------------------------------------------------
// The client: Submits, their latencies and outcomes.

typedef struct submit {
    uint8_t *body;
    size_t length, offset;
    double start;
    double sent;     // when the load generator got to it (later than start when it lags)
    int grpc_status; // -1 until seen
    connection *conn;
} submit;

static double *latencies;
static size_t latency_count, latency_capacity;
static uint64_t ok_count, failed_count, in_flight;

static FILE *trace_file;
static double job_begin;  // when the current command began (see below)

static void record_latency(double seconds) {
    if (latency_count == latency_capacity) {
        latency_capacity = latency_capacity ? latency_capacity * 2 : 65536;
        latencies = realloc(latencies, latency_capacity * sizeof *latencies);
        if (!latencies) die("realloc");
    }
    latencies[latency_count++] = seconds;
}

static ssize_t submit_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                           uint32_t *data_flags, nghttp2_data_source *source, void *user_data) {
    (void)session; (void)stream_id; (void)user_data;
    submit *s = source->ptr;
    size_t n = s->length - s->offset;
    if (n > length) n = length;
    memcpy(buf, s->body + s->offset, n);
    s->offset += n;
    if (s->offset == s->length) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int client_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                         void *user_data) {
    (void)flags; (void)user_data;
    submit *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s && namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        char text[16] = {0};
        memcpy(text, value, valuelen < 15 ? valuelen : 15);
        s->grpc_status = atoi(text);
    }
    return 0;
}

static int client_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                               void *user_data) {
    (void)user_data;
    submit *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s) return 0;
    if (error_code == 0 && s->grpc_status == 0) {
        ok_count++;
        double now = now_seconds();
        record_latency(now - s->start);
        if (trace_file)
            fprintf(trace_file, "%.6f %.3f %.3f\n", s->start - job_begin, (now - s->start) * 1000,
                    (s->sent - s->start) * 1000);
    } else {
        failed_count++;
    }
    s->conn->in_flight--;
    in_flight--;
    free(s->body);
    free(s);
    return 0;
}

static connection **clients;
static size_t client_count, next_client;
static char steps_json[1024];
static uint8_t payload_bytes[64];
static size_t payload_length;

static void start_submit(const char *prefix, uint64_t index, double start) {
    char gid[300];
    snprintf(gid, sizeof gid, "%s-%llu", prefix, (unsigned long long)index);
    Dtmgimp__DtmRequest request = DTMGIMP__DTM_REQUEST__INIT;
    ProtobufCBinaryData payloads[2] = {{payload_length, payload_bytes}, {payload_length, payload_bytes}};
    request.gid = gid;
    request.transtype = "saga";
    request.steps = steps_json;
    request.n_binpayloads = 2;
    request.binpayloads = payloads;
    size_t size = dtmgimp__dtm_request__get_packed_size(&request);
    submit *s = calloc(1, sizeof *s);
    if (!s) die("calloc");
    s->body = malloc(size + 5);
    if (!s->body) die("malloc");
    s->body[0] = 0;
    s->body[1] = (uint8_t)(size >> 24);
    s->body[2] = (uint8_t)(size >> 16);
    s->body[3] = (uint8_t)(size >> 8);
    s->body[4] = (uint8_t)size;
    dtmgimp__dtm_request__pack(&request, s->body + 5);
    s->length = size + 5;
    s->start = start;
    s->sent = now_seconds();
    s->grpc_status = -1;
    if (client_count == 0) {
        fprintf(stderr, "loadgen: no coordinator to send Submits to (started with 'none')\n");
        exit(2);
    }
    connection *c = clients[next_client++ % client_count];
    s->conn = c;
    const nghttp2_nv headers[] = {
        {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":path", (uint8_t *)"/dtmgimp.Dtm/Submit", 5, 19, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":authority", (uint8_t *)c->authority, 10, strlen(c->authority), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider body = {.source.ptr = s, .read_callback = submit_body};
    if (nghttp2_submit_request(c->session, NULL, headers, 6, &body, s) < 0) {
        fprintf(stderr, "loadgen: nghttp2_submit_request failed\n");
        exit(1);
    }
    c->in_flight++;
    in_flight++;
}

static connection *connect_coordinator(const char *host_port) {
    char host[256];
    const char *colon = strrchr(host_port, ':');
    if (!colon || (size_t)(colon - host_port) >= sizeof host) {
        fprintf(stderr, "loadgen: bad coordinator address '%s' (want HOST:PORT)\n", host_port);
        exit(2);
    }
    memcpy(host, host_port, colon - host_port);
    host[colon - host_port] = 0;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &address.sin_addr) != 1) {
        fprintf(stderr, "loadgen: '%s' is not an IPv4 address\n", host);
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) die("connect to the coordinator");
    set_nonblocking(fd);
    static nghttp2_session_callbacks *callbacks;
    if (!callbacks) {
        nghttp2_session_callbacks_new(&callbacks);
        nghttp2_session_callbacks_set_send_callback(callbacks, send_callback);
        nghttp2_session_callbacks_set_on_header_callback(callbacks, client_header);
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, client_stream_close);
    }
    connection *c = calloc(1, sizeof *c);
    if (!c) die("calloc");
    c->fd = fd;
    c->authority = strdup(host_port);
    if (nghttp2_session_client_new(&c->session, callbacks, c) != 0) die("client session");
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 24}};
    nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings, 1);
    nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, 1 << 30);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl add");
    flush_connection(c);
    return c;
}

// ---------------------------------------------------------------------------------------------
// The loop

static int listener;

static void handle_readable(connection *c) {
    uint8_t buffer[READ_BUFFER];
    for (;;) {
        ssize_t n = read(c->fd, buffer, sizeof buffer);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            n = 0;
        }
        if (n == 0) {
            if (!c->is_server) {
                fprintf(stderr, "loadgen: the coordinator closed a connection\n");
                exit(1);
            }
            epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            nghttp2_session_del(c->session);
            free(c);
            return;
        }
        if (nghttp2_session_mem_recv(c->session, buffer, (size_t)n) < 0) {
            fprintf(stderr, "loadgen: HTTP/2 protocol error on fd %d\n", c->fd);
            exit(1);
        }
        if (n < (ssize_t)sizeof buffer) break;
    }
    flush_connection(c);
}

// The current command: none, a closed loop or an open (paced) loop.
enum job { JOB_NONE, JOB_CLOSED, JOB_PACED };
static enum job job = JOB_NONE;
static char run_prefix[256];
static uint64_t job_total, job_started, closed_limit;
static double paced_rate;

static void tick(void) {
    double now = now_seconds();
    if (job == JOB_CLOSED) {
        while (job_started < job_total && in_flight < closed_limit) start_submit(run_prefix, job_started++, now);
    } else if (job == JOB_PACED) {
        while (job_started < job_total) {
            double due = job_begin + (double)job_started / paced_rate;
            if (due > now) break;
            start_submit(run_prefix, job_started++, due);
        }
    }
}

// How long epoll may wait: until the next paced Submit is due, to the nanosecond (a timeout in
// whole milliseconds would send paced Submits up to 1 ms late, in bursts, and that lateness
// would count as the coordinator's latency), or a second when nothing is due.
static struct timespec wait_timeout(void) {
    struct timespec timeout = {1, 0};
    if (job != JOB_PACED || job_started == job_total) return timeout;
    double wait = job_begin + (double)job_started / paced_rate - now_seconds();
    if (wait <= 0) return (struct timespec){0, 0};
    timeout.tv_sec = (time_t)wait;
    timeout.tv_nsec = (long)((wait - (double)timeout.tv_sec) * 1e9);
    return timeout;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(double p) {
    if (latency_count == 0) return 0;
    size_t index = (size_t)(p * (double)(latency_count - 1) + 0.5);
    return latencies[index] * 1000;
}

static void finish_job(void) {
    double seconds = now_seconds() - job_begin;
    qsort(latencies, latency_count, sizeof *latencies, compare_doubles);
    printf("result sent=%llu ok=%llu failed=%llu seconds=%.6f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f busi=%llu\n",
           (unsigned long long)job_total, (unsigned long long)ok_count, (unsigned long long)failed_count, seconds,
           percentile(0.5), percentile(0.9), percentile(0.99), percentile(1.0), (unsigned long long)busi_calls);
    fflush(stdout);
    job = JOB_NONE;
}

static void command(const char *line) {
    unsigned long long n, c;
    double rate, seconds;
    if (job != JOB_NONE) {
        printf("result error busy\n");
    } else if (sscanf(line, "closed %llu %llu %255s", &n, &c, run_prefix) == 3) {
        job = JOB_CLOSED;
        job_total = n;
        closed_limit = c ? c : 1;
    } else if (sscanf(line, "paced %lf %lf %255s", &rate, &seconds, run_prefix) == 3 && rate > 0 && seconds > 0) {
        job = JOB_PACED;
        paced_rate = rate;
        job_total = (uint64_t)(rate * seconds);
    } else if (strncmp(line, "busi", 4) == 0) {
        printf("result busi=%llu\n", (unsigned long long)busi_calls);
    } else {
        fprintf(stderr, "loadgen: unknown command: %s\n", line);
        printf("result error unknown command\n");
    }
    if (job != JOB_NONE) {
        latency_count = 0;
        ok_count = failed_count = 0;
        job_started = 0;
        job_begin = now_seconds();
    }
    fflush(stdout);
}

/// Reads whole lines from standard input; false at its end.
static int read_commands(void) {
    static char pending[1024];
    static size_t used;
    for (;;) {
        ssize_t n = read(0, pending + used, sizeof pending - 1 - used);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        if (n == 0) return 0;
        used += (size_t)n;
        char *newline;
        while ((newline = memchr(pending, '\n', used))) {
            *newline = 0;
            command(pending);
            size_t rest = used - (size_t)(newline + 1 - pending);
            memmove(pending, newline + 1, rest);
            used = rest;
        }
        if (used == sizeof pending - 1) used = 0; // an absurdly long line: dropped
    }
}

// Marks the listener and standard input in epoll (connections carry their own pointer).
static int listener_tag, stdin_tag;

static void run_loop(void) {
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        tick();
        for (size_t i = 0; i < client_count; i++) flush_connection(clients[i]);
        if (job != JOB_NONE && job_started == job_total && in_flight == 0) finish_job();
        struct timespec timeout = wait_timeout();
        int n = epoll_pwait2(epfd, events, MAX_EVENTS, &timeout, NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_pwait2");
        }
        for (int i = 0; i < n; i++) {
            void *tag = events[i].data.ptr;
            if (tag == &listener_tag) {
                accept_busi(listener);
            } else if (tag == &stdin_tag) {
                if (!read_commands()) return;
            } else {
                connection *c = tag;
                if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) handle_readable(c);
                else flush_connection(c);
            }
        }
    }
}

int main(int argc, char **argv) {
    const char *trace_path = getenv("LOADGEN_TRACE");
    if (trace_path && *trace_path && !(trace_file = fopen(trace_path, "w"))) die("LOADGEN_TRACE");
    if (argc < 2) {
        fprintf(stderr, "usage: loadgen HOST:PORT[,HOST:PORT...] [CONNECTIONS per coordinator]\n");
        return 2;
    }
    int per_coordinator = argc > 2 ? atoi(argv[2]) : 4;
    if (per_coordinator < 1) per_coordinator = 1;
    epfd = epoll_create1(0);
    if (epfd < 0) die("epoll_create1");

    nghttp2_session_callbacks_new(&server_callbacks);
    nghttp2_session_callbacks_set_send_callback(server_callbacks, send_callback);
    nghttp2_session_callbacks_set_on_frame_recv_callback(server_callbacks, busi_frame_recv);

    listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (listener < 0) die("socket");
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0) die("bind");
    if (listen(listener, 512) < 0) die("listen");
    socklen_t length = sizeof address;
    if (getsockname(listener, (struct sockaddr *)&address, &length) < 0) die("getsockname");
    int busi_port = ntohs(address.sin_port);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listener_tag};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev) < 0) die("epoll_ctl listener");

    snprintf(steps_json, sizeof steps_json,
             "[{\"action\":\"127.0.0.1:%d/busi.Busi/TransOut\",\"compensate\":\"127.0.0.1:%d/busi.Busi/TransOutRevert\"},"
             "{\"action\":\"127.0.0.1:%d/busi.Busi/TransIn\",\"compensate\":\"127.0.0.1:%d/busi.Busi/TransInRevert\"}]",
             busi_port, busi_port, busi_port, busi_port);
    Busi__ReqGrpc busi_request = BUSI__REQ_GRPC__INIT;
    busi_request.amount = 30;
    payload_length = busi__req_grpc__pack(&busi_request, payload_bytes);

    // "none": serve the branches only (e.g. for a coordinator started later, as in recovery).
    char *list = strcmp(argv[1], "none") == 0 ? strdup("") : strdup(argv[1]);
    for (char *save = NULL, *item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        for (int i = 0; i < per_coordinator; i++) {
            clients = realloc(clients, (client_count + 1) * sizeof *clients);
            if (!clients) die("realloc");
            clients[client_count++] = connect_coordinator(item);
        }
    }
    printf("busi-port %d\n", busi_port);
    fflush(stdout);

    int flags = fcntl(0, F_GETFL, 0);
    if (flags < 0 || fcntl(0, F_SETFL, flags | O_NONBLOCK) < 0) die("fcntl stdin");
    struct epoll_event input = {.events = EPOLLIN, .data.ptr = &stdin_tag};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &input) < 0) die("epoll_ctl stdin (standard input must be a pipe)");
    run_loop();
    return 0;
}
