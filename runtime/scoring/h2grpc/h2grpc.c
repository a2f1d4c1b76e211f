/* The server side of gRPC over HTTP/2 for edgewise-score: nghttp2 runs the connection, this file does gRPC's
 * message framing, and Python drives both through a handful of calls.
 *
 * Nothing calls back into Python. Whatever the connection produces for the application (a new call, a complete
 * message, the end of a request, a closed stream) is appended to one event buffer, which Python decodes in one
 * pass when `h2g_receive` returns. Bytes for the socket accumulate in one output buffer that Python takes with
 * `h2g_output`. Response messages are queued per stream and written into DATA frames without an intermediate
 * copy; trailers follow the last queued byte of their stream.
 *
 * Flow control is what bounds memory. The connection window reopens as soon as bytes arrive, but a stream's
 * window only while the application has less than `unread_limit` bytes of that stream's messages it has not
 * taken (`h2g_release`), so a client can never queue more than about two windows for a handler that does
 * not read. Outbound, `h2g_send_message` reports when a stream has more than `queue_limit` bytes waiting for
 * the client's window, so a streaming handler can wait instead of piling up messages.
 *
 * Event layout (native byte order): kind u8, flag u8, 2 bytes of padding, stream id u32, argument u32, then, for
 * REQUEST and MESSAGE, `argument` bytes of payload. REQUEST's payload is the path followed by "\0name\0value"
 * for each regular header (HTTP/2 forbids NUL in names and values, and nghttp2 enforces it).
 */

#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define H2G_API __attribute__((visibility("default")))

enum { EV_REQUEST = 1, EV_MESSAGE = 2, EV_END = 3, EV_CLOSED = 4, EV_TOO_LARGE = 5 };

/* Results of the calls on a stream. */
enum { H2G_OK = 0, H2G_IGNORED = 1, H2G_HEADERS_SENT = 2, H2G_QUEUE_FULL = 3, H2G_NOMEM = -1, H2G_FAILED = -2 };

/* Results of h2g_receive below zero. */
enum { H2G_RECV_PROTOCOL = -1, H2G_RECV_NOMEM = -2, H2G_RECV_CLOSED = -3 };

/* Buffers that grew past this for one big message or response are given back once drained. */
#define H2G_KEEP_CAPACITY (1u << 20)

/* Request headers (names, values and 32 bytes each, as HPACK counts them) beyond which a call is refused with
   RESOURCE_EXHAUSTED instead of being decoded into an event, as grpcio's default hard limit does. Without it,
   a few KB of HPACK that reference one big table entry again and again decode to megabytes. */
#define H2G_MAX_HEADER_LIST 16384

static const uint8_t SHUTDOWN_PING[8] = {'e', 'w', '-', 'g', 'o', 'a', 'w', 'y'};

typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} h2g_buf;

typedef struct {
    uint8_t kind;
    uint8_t flag;
    uint16_t pad;
    uint32_t stream_id;
    uint32_t arg;
} h2g_event_head;

typedef struct h2g_stream {
    struct h2g_stream *prev, *next;
    int32_t id;
    uint8_t requested;    /* its REQUEST event went out: it will get exactly one CLOSED */
    uint8_t headers_sent; /* the response HEADERS are submitted */
    uint8_t ended;        /* trailers or RST_STREAM are submitted: nothing more goes out */
    uint8_t deferred;     /* the data provider waits for h2g_send_message or h2g_send_trailers */
    /* inbound gRPC framing */
    uint8_t prefix[5];
    uint8_t prefix_len;
    uint8_t compressed;
    uint32_t msg_len;   /* length of the message being read (valid once prefix_len == 5) */
    uint32_t skip_left; /* bytes of an oversized message still to discard */
    h2g_buf msg;        /* a message that spans DATA chunks */
    size_t unread;   /* bytes of messages given to the application and not yet released by it */
    size_t withheld; /* bytes received and not yet given back to the stream's flow-control window */
    /* outbound */
    h2g_buf out; /* length-prefixed messages not yet in a DATA frame */
    size_t out_pos;
    uint8_t *trailers; /* "name\0value\0..." to send after the queued data */
    size_t trailers_len;
} h2g_stream;

typedef struct h2g_conn {
    nghttp2_session *session;
    h2g_buf events;
    size_t events_delivered;
    h2g_buf out;
    int out_delivered;
    h2g_buf path; /* of the header block being received (HTTP/2 never interleaves header blocks) */
    h2g_buf headers;
    size_t header_list; /* its size as HPACK counts it */
    uint8_t method_post, te_trailers;
    h2g_stream *streams;
    uint32_t max_message;
    size_t unread_limit;
    size_t queue_limit;
    int32_t open_streams;
    int shutdown_state; /* 0 running, 1 notice sent and waiting for the PING ack, 2 final GOAWAY submitted */
    int protocol_error;
    int nomem;
    char error[256];
} h2g_conn;

/* ---- buffers */

static int buf_reserve(h2g_buf *b, size_t extra) {
    if (b->cap - b->len >= extra) return 0;
    size_t need = b->len + extra;
    if (need < b->len) return -1;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    uint8_t *data = realloc(b->data, cap);
    if (!data) return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

static int buf_append(h2g_buf *b, const void *data, size_t len) {
    if (buf_reserve(b, len)) return -1;
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

/* Like buf_reserve, but never beyond `limit` bytes in all (the length of the message being assembled). */
static int buf_reserve_within(h2g_buf *b, size_t extra, size_t limit) {
    if (b->cap - b->len >= extra) return 0;
    size_t cap = b->cap ? b->cap * 2 : 65536;
    if (cap < b->len + extra) cap = b->len + extra;
    if (cap > limit) cap = limit;
    if (cap < b->len + extra) return -1;
    uint8_t *data = realloc(b->data, cap);
    if (!data) return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

static void buf_free(h2g_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Empty `b`, giving its memory back if one big payload made it large. */
static void buf_clear(h2g_buf *b) {
    b->len = 0;
    if (b->cap > H2G_KEEP_CAPACITY) buf_free(b);
}

/* ---- events */

static int event_begin(h2g_conn *c, uint8_t kind, uint8_t flag, int32_t stream_id, uint32_t arg, size_t payload) {
    h2g_event_head head = {kind, flag, 0, (uint32_t)stream_id, arg};
    if (buf_reserve(&c->events, sizeof head + payload)) {
        c->nomem = 1;
        return -1;
    }
    memcpy(c->events.data + c->events.len, &head, sizeof head);
    c->events.len += sizeof head;
    return 0;
}

static int emit(h2g_conn *c, uint8_t kind, int32_t stream_id, uint32_t arg) {
    return event_begin(c, kind, 0, stream_id, arg, 0);
}

static int emit_message(h2g_conn *c, h2g_stream *s, const uint8_t *data, uint32_t len) {
    if (event_begin(c, EV_MESSAGE, s->compressed, s->id, len, len)) return -1;
    if (len) memcpy(c->events.data + c->events.len, data, len);
    c->events.len += len;
    s->unread += 5 + (size_t)len;
    return 0;
}

/* ---- streams */

static h2g_stream *stream_new(h2g_conn *c, int32_t id) {
    h2g_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->id = id;
    s->next = c->streams;
    if (c->streams) c->streams->prev = s;
    c->streams = s;
    return s;
}

static void stream_free(h2g_conn *c, h2g_stream *s) {
    if (s->prev)
        s->prev->next = s->next;
    else
        c->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    buf_free(&s->msg);
    buf_free(&s->out);
    free(s->trailers);
    free(s);
}

/* The stream `id` if it is a call that can still send; NULL for unknown, closed or ended streams. */
static h2g_stream *live_stream(h2g_conn *c, int32_t id) {
    if (!c || id <= 0) return NULL;
    h2g_stream *s = nghttp2_session_get_stream_user_data(c->session, id);
    if (!s || !s->requested || s->ended) return NULL;
    return s;
}

/* ---- header lists passed from Python as "name\0value\0name\0value\0" */

#define H2G_STACK_NV 24

static size_t count_pairs(const uint8_t *blob, size_t len) {
    size_t zeros = 0;
    for (size_t i = 0; i < len; i++) zeros += blob[i] == 0;
    return zeros / 2;
}

/* Fill `nva` (room for `room` entries) after `first` fixed entries with the pairs of `blob`; returns the count. */
static size_t fill_pairs(nghttp2_nv *nva, size_t first, const uint8_t *blob, size_t len) {
    size_t n = first, pos = 0;
    while (pos < len) {
        const uint8_t *name = blob + pos;
        const uint8_t *end = memchr(name, 0, len - pos);
        if (!end) break;
        size_t namelen = (size_t)(end - name);
        pos += namelen + 1;
        if (pos > len) break;
        const uint8_t *value = blob + pos;
        end = memchr(value, 0, len - pos);
        if (!end) break;
        size_t valuelen = (size_t)(end - value);
        pos += valuelen + 1;
        nva[n].name = (uint8_t *)name;
        nva[n].namelen = namelen;
        nva[n].value = (uint8_t *)value;
        nva[n].valuelen = valuelen;
        nva[n].flags = NGHTTP2_NV_FLAG_NONE;
        n++;
    }
    return n;
}

#define MAKE_NV(NAME, VALUE)                                                                      \
    {                                                                                             \
        (uint8_t *)(NAME), (uint8_t *)(VALUE), sizeof(NAME) - 1, sizeof(VALUE) - 1,               \
            NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE                           \
    }

static const nghttp2_nv RESPONSE_HEADERS[2] = {MAKE_NV(":status", "200"), MAKE_NV("content-type", "application/grpc")};

/* Submit HEADERS made of the two response headers, then the pairs of `blob`; with `provider`, DATA follows. */
static int submit_response(h2g_conn *c, h2g_stream *s, const uint8_t *blob, size_t len,
                           nghttp2_data_provider *provider) {
    nghttp2_nv stack[H2G_STACK_NV];
    nghttp2_nv *nva = stack;
    size_t room = 2 + (len ? count_pairs(blob, len) : 0);
    if (room > H2G_STACK_NV) {
        nva = malloc(room * sizeof *nva);
        if (!nva) return H2G_NOMEM;
    }
    memcpy(nva, RESPONSE_HEADERS, sizeof RESPONSE_HEADERS);
    size_t n = len ? fill_pairs(nva, 2, blob, len) : 2;
    int rv = nghttp2_submit_response(c->session, s->id, nva, n, provider);
    if (nva != stack) free(nva);
    return rv == 0 ? H2G_OK : (rv == NGHTTP2_ERR_NOMEM ? H2G_NOMEM : H2G_FAILED);
}

static int submit_trailers(h2g_conn *c, h2g_stream *s) {
    nghttp2_nv stack[H2G_STACK_NV];
    nghttp2_nv *nva = stack;
    size_t room = count_pairs(s->trailers, s->trailers_len);
    if (room > H2G_STACK_NV) {
        nva = malloc(room * sizeof *nva);
        if (!nva) return NGHTTP2_ERR_NOMEM;
    }
    size_t n = fill_pairs(nva, 0, s->trailers, s->trailers_len);
    int rv = nghttp2_submit_trailer(c->session, s->id, nva, n);
    if (nva != stack) free(nva);
    free(s->trailers);
    s->trailers = NULL;
    s->trailers_len = 0;
    return rv;
}

/* ---- nghttp2 callbacks */

static ssize_t on_send(nghttp2_session *session, const uint8_t *data, size_t len, int flags, void *user_data) {
    (void)session;
    (void)flags;
    h2g_conn *c = user_data;
    if (buf_append(&c->out, data, len)) {
        c->nomem = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return (ssize_t)len;
}

/* Write a DATA frame straight from the stream's queue into the output buffer. */
static int on_send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                        nghttp2_data_source *source, void *user_data) {
    (void)session;
    h2g_conn *c = user_data;
    h2g_stream *s = source->ptr;
    size_t padlen = frame->data.padlen;
    if (buf_reserve(&c->out, 9 + padlen + length)) {
        c->nomem = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    uint8_t *p = c->out.data + c->out.len;
    memcpy(p, framehd, 9);
    p += 9;
    if (padlen) *p++ = (uint8_t)(padlen - 1);
    memcpy(p, s->out.data + s->out_pos, length);
    p += length;
    if (padlen > 1) {
        memset(p, 0, padlen - 1);
        p += padlen - 1;
    }
    c->out.len = (size_t)(p - c->out.data);
    s->out_pos += length;
    if (s->out_pos == s->out.len) {
        s->out_pos = 0;
        buf_clear(&s->out);
    }
    return 0;
}

static ssize_t on_read_data(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *data_flags, nghttp2_data_source *source, void *user_data) {
    (void)session;
    (void)buf;
    (void)stream_id;
    h2g_conn *c = user_data;
    h2g_stream *s = source->ptr;
    size_t avail = s->out.len - s->out_pos;
    if (avail == 0 && !s->trailers) {
        s->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = avail < length ? avail : length;
    if (n) *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == avail && s->trailers) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        int rv = submit_trailers(c, s);
        if (rv == NGHTTP2_ERR_NOMEM) return NGHTTP2_ERR_CALLBACK_FAILURE;
        if (rv != 0) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return (ssize_t)n;
}

/* DATA frames of up to 64 KiB when the peer and the windows allow it, instead of nghttp2's 16 KiB: a quarter of
   the frames for big messages, while nghttp2's frame buffer (sized by this) stays small. */
#define H2G_MAX_DATA_FRAME 65536

static ssize_t on_read_length(nghttp2_session *session, uint8_t frame_type, int32_t stream_id,
                              int32_t session_window, int32_t stream_window, uint32_t max_frame, void *user_data) {
    (void)session;
    (void)frame_type;
    (void)stream_id;
    (void)user_data;
    int64_t n = max_frame < H2G_MAX_DATA_FRAME ? max_frame : H2G_MAX_DATA_FRAME;
    if (session_window < n) n = session_window;
    if (stream_window < n) n = stream_window;
    return n > 0 ? (ssize_t)n : 1;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
    h2g_conn *c = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    h2g_stream *s = stream_new(c, frame->hd.stream_id);
    if (!s) {
        c->nomem = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s);
    c->path.len = 0;
    c->headers.len = 0;
    c->header_list = 0;
    c->method_post = c->te_trailers = 0;
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data) {
    (void)session;
    (void)flags;
    h2g_conn *c = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    c->header_list += namelen + valuelen + 32;
    if (c->header_list > H2G_MAX_HEADER_LIST) return 0; /* refused once the block ends; nothing more is kept */
    int failed;
    if (namelen && name[0] == ':') {
        if (namelen == 7 && memcmp(name, ":method", 7) == 0)
            c->method_post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
        if (namelen != 5 || memcmp(name, ":path", 5) != 0) return 0;
        c->path.len = 0;
        failed = buf_append(&c->path, value, valuelen);
    } else {
        if (namelen == 2 && name[0] == 't' && name[1] == 'e')
            c->te_trailers = valuelen == 8 && memcmp(value, "trailers", 8) == 0;
        failed = buf_reserve(&c->headers, namelen + valuelen + 2);
        if (!failed) {
            uint8_t *p = c->headers.data + c->headers.len;
            *p++ = 0;
            memcpy(p, name, namelen);
            p += namelen;
            *p++ = 0;
            memcpy(p, value, valuelen);
            c->headers.len += namelen + valuelen + 2;
        }
    }
    if (failed) {
        c->nomem = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

/* Nothing more of the stream's request will be read (it was answered, reset or refused): whatever the client
   still sends is dropped as it arrives, and the window it was held to opens again. */
static void stream_done_reading(h2g_conn *c, h2g_stream *s) {
    s->ended = 1;
    if (s->withheld) {
        nghttp2_session_consume_stream(c->session, s->id, s->withheld);
        s->withheld = 0;
    }
}

/* Answer a request that is not a gRPC call here, without an event for the application: as grpcio answers it. */
static int refuse_request(h2g_conn *c, h2g_stream *s) {
    stream_done_reading(c, s);
    if (c->header_list > H2G_MAX_HEADER_LIST) {
        char blob[128];
        int n = snprintf(blob, sizeof blob, "grpc-status%c8%cgrpc-message%creceived metadata size exceeds hard limit "
                         "(%zu vs. %d)%c", 0, 0, 0, c->header_list, H2G_MAX_HEADER_LIST, 0);
        s->headers_sent = 1;
        return submit_response(c, s, (const uint8_t *)blob, (size_t)n, NULL) == H2G_NOMEM ? -1 : 0;
    }
    /* not a POST, or without "te: trailers": grpcio resets these */
    return nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR) ==
                   NGHTTP2_ERR_NOMEM ? -1 : 0;
}

static int emit_request(h2g_conn *c, h2g_stream *s) {
    if (c->header_list > H2G_MAX_HEADER_LIST || !c->method_post || !c->te_trailers) {
        if (refuse_request(c, s) == 0) return 0;
        c->nomem = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    size_t len = c->path.len + c->headers.len;
    if (len > UINT32_MAX) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (event_begin(c, EV_REQUEST, 0, s->id, (uint32_t)len, len)) return NGHTTP2_ERR_CALLBACK_FAILURE;
    uint8_t *p = c->events.data + c->events.len;
    if (c->path.len) memcpy(p, c->path.data, c->path.len);
    if (c->headers.len) memcpy(p + c->path.len, c->headers.data, c->headers.len);
    c->events.len += len;
    s->requested = 1;
    c->open_streams++;
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
    h2g_conn *c = user_data;
    h2g_stream *s;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (!s) return 0;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            int rv = emit_request(c, s);
            if (rv) return rv;
        }
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && s->requested) {
            if (emit(c, EV_END, s->id, 0)) return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    case NGHTTP2_DATA:
        if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
        s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (s && s->requested && emit(c, EV_END, s->id, 0)) return NGHTTP2_ERR_CALLBACK_FAILURE;
        return 0;
    case NGHTTP2_PING:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && c->shutdown_state == 1 &&
            memcmp(frame->ping.opaque_data, SHUTDOWN_PING, 8) == 0) {
            /* The client has seen the shutdown notice: streams it opens from now on are refused. */
            nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session),
                                  NGHTTP2_NO_ERROR, NULL, 0);
            c->shutdown_state = 2;
        }
        return 0;
    default:
        return 0;
    }
}

/* gRPC framing: 1 byte compressed flag, 4 bytes big-endian length, the message. */
static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                         void *user_data) {
    (void)flags;
    h2g_conn *c = user_data;
    /* The connection window always reopens; each stream's own window is what holds a client back. */
    if (nghttp2_session_consume_connection(session, len)) {
        c->nomem = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    h2g_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s || !s->requested || s->ended || s->unread < c->unread_limit) {
        if (nghttp2_session_consume_stream(session, stream_id, len)) {
            c->nomem = 1;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        if (!s || !s->requested || s->ended) return 0; /* nobody will read it: dropped */
    } else {
        s->withheld += len;
    }
    while (len) {
        if (s->skip_left) {
            size_t n = len < s->skip_left ? len : s->skip_left;
            s->skip_left -= (uint32_t)n;
            data += n;
            len -= n;
            continue;
        }
        if (s->prefix_len < 5) {
            if (s->prefix_len == 0 && len >= 5) {
                memcpy(s->prefix, data, 5);
                s->prefix_len = 5;
                data += 5;
                len -= 5;
            } else {
                size_t n = 5 - s->prefix_len;
                if (n > len) n = len;
                memcpy(s->prefix + s->prefix_len, data, n);
                s->prefix_len += (uint8_t)n;
                data += n;
                len -= n;
                if (s->prefix_len < 5) return 0;
            }
            s->compressed = s->prefix[0] != 0;
            s->msg_len = (uint32_t)s->prefix[1] << 24 | (uint32_t)s->prefix[2] << 16 | (uint32_t)s->prefix[3] << 8 |
                         (uint32_t)s->prefix[4];
            if (s->msg_len > c->max_message) {
                if (emit(c, EV_TOO_LARGE, s->id, s->msg_len)) return NGHTTP2_ERR_CALLBACK_FAILURE;
                s->skip_left = s->msg_len;
                s->prefix_len = 0;
                continue;
            }
            if (len >= s->msg_len) { /* the whole message is in this chunk: no buffering */
                if (emit_message(c, s, data, s->msg_len)) return NGHTTP2_ERR_CALLBACK_FAILURE;
                data += s->msg_len;
                len -= s->msg_len;
                s->prefix_len = 0;
                continue;
            }
            s->msg.len = 0;
        }
        size_t missing = s->msg_len - s->msg.len;
        size_t n = len < missing ? len : missing;
        if (buf_reserve_within(&s->msg, n, s->msg_len) || buf_append(&s->msg, data, n)) {
            c->nomem = 1;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        data += n;
        len -= n;
        if (s->msg.len == s->msg_len) {
            if (emit_message(c, s, s->msg.data, s->msg_len)) return NGHTTP2_ERR_CALLBACK_FAILURE;
            buf_clear(&s->msg);
            s->prefix_len = 0;
        }
    }
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data) {
    h2g_conn *c = user_data;
    h2g_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s) return 0;
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    int failed = 0;
    if (s->requested) {
        c->open_streams--;
        failed = emit(c, EV_CLOSED, stream_id, error_code);
    }
    stream_free(c, s);
    return failed ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
    h2g_conn *c = user_data;
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR) {
        /* nghttp2 ends the connection this way only when the client broke the protocol */
        if (!c->protocol_error) {
            c->protocol_error = 1;
            snprintf(c->error, sizeof c->error, "the client broke the HTTP/2 protocol (%s): %.*s",
                     nghttp2_http2_strerror(frame->goaway.error_code), (int)(frame->goaway.opaque_data_len & 0xff),
                     frame->goaway.opaque_data ? (const char *)frame->goaway.opaque_data : "");
        }
        return 0;
    }
    if (frame->hd.type == NGHTTP2_HEADERS && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        nghttp2_session_get_stream_remote_close(session, frame->hd.stream_id) == 0) {
        /* The response is complete while the client still sends: tell it to stop (RFC 9113, 8.1). */
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    }
    return 0;
}

/* ---- the API */

H2G_API const char *h2g_nghttp2_version(void) { return nghttp2_version(0)->version_str; }

H2G_API void h2g_free(h2g_conn *c) {
    if (!c) return;
    if (c->session) nghttp2_session_del(c->session); /* does not call on_stream_close */
    while (c->streams) stream_free(c, c->streams);
    buf_free(&c->events);
    buf_free(&c->out);
    buf_free(&c->path);
    buf_free(&c->headers);
    free(c);
}

H2G_API h2g_conn *h2g_new(uint32_t max_message, uint32_t max_streams, int32_t stream_window, int32_t conn_window,
                          uint64_t queue_limit) {
    h2g_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->max_message = max_message;
    c->unread_limit = (size_t)stream_window;
    c->queue_limit = (size_t)queue_limit;
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb)) {
        free(c);
        return NULL;
    }
    nghttp2_session_callbacks_set_send_callback(cb, on_send);
    nghttp2_session_callbacks_set_send_data_callback(cb, on_send_data);
    nghttp2_session_callbacks_set_data_source_read_length_callback(cb, on_read_length);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt)) {
        nghttp2_session_callbacks_del(cb);
        free(c);
        return NULL;
    }
    nghttp2_option_set_no_closed_streams(opt, 1);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    int rv = nghttp2_session_server_new2(&c->session, cb, c, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rv) {
        free(c);
        return NULL;
    }
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)stream_window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2G_MAX_HEADER_LIST},
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
    };
    if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings, sizeof settings / sizeof settings[0]) ||
        nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, conn_window)) {
        h2g_free(c);
        return NULL;
    }
    return c;
}

static void take_delivered(h2g_conn *c) {
    if (c->events_delivered) {
        size_t rest = c->events.len - c->events_delivered;
        if (rest) memmove(c->events.data, c->events.data + c->events_delivered, rest);
        c->events.len = rest;
        c->events_delivered = 0;
        if (!rest) buf_clear(&c->events);
    }
    if (c->out_delivered) {
        buf_clear(&c->out);
        c->out_delivered = 0;
    }
}

/* Feed `len` bytes from the socket; returns the length of the events at *events, or a negative H2G_RECV_*. */
H2G_API int64_t h2g_receive(h2g_conn *c, const uint8_t *data, size_t len, const uint8_t **events) {
    *events = NULL;
    if (!c) return H2G_RECV_CLOSED;
    take_delivered(c);
    if (c->protocol_error) return H2G_RECV_PROTOCOL;
    ssize_t rv = nghttp2_session_mem_recv(c->session, data, len);
    if (rv < 0 || c->nomem) {
        if (c->nomem || rv == NGHTTP2_ERR_NOMEM) return H2G_RECV_NOMEM;
        c->protocol_error = 1;
        if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC)
            snprintf(c->error, sizeof c->error,
                     "the client did not start with the HTTP/2 preface; it does not speak gRPC (HTTP/2)");
        else if (rv == NGHTTP2_ERR_FLOODED)
            snprintf(c->error, sizeof c->error, "the client flooded the connection with frames that need answers");
        else
            snprintf(c->error, sizeof c->error, "the HTTP/2 connection failed: %s", nghttp2_strerror((int)rv));
        nghttp2_session_terminate_session(c->session, NGHTTP2_PROTOCOL_ERROR);
        nghttp2_session_send(c->session);
        return H2G_RECV_PROTOCOL;
    }
    /* Acks, window updates and any response data go into the output buffer now, so a stream that this
       finishes reports its CLOSED event with this receive. */
    rv = nghttp2_session_send(c->session);
    if (rv < 0 || c->nomem) return H2G_RECV_NOMEM;
    if (c->protocol_error) return H2G_RECV_PROTOCOL;
    c->events_delivered = c->events.len;
    *events = c->events.data;
    return (int64_t)c->events.len;
}

H2G_API const char *h2g_error(h2g_conn *c) { return c ? c->error : ""; }

/* Everything nghttp2 wants to write; the bytes at *out stay valid until the next call on `c`. */
H2G_API int64_t h2g_output(h2g_conn *c, const uint8_t **out) {
    *out = NULL;
    if (!c) return 0;
    if (c->out_delivered) {
        buf_clear(&c->out);
        c->out_delivered = 0;
    }
    int rv = nghttp2_session_send(c->session);
    if (c->nomem || rv == NGHTTP2_ERR_NOMEM) return H2G_NOMEM;
    if (rv < 0) return H2G_FAILED;
    c->out_delivered = 1;
    *out = c->out.data;
    return (int64_t)c->out.len;
}

static nghttp2_data_provider provider_of(h2g_stream *s) {
    nghttp2_data_provider provider;
    provider.source.ptr = s;
    provider.read_callback = on_read_data;
    return provider;
}

H2G_API int h2g_send_message(h2g_conn *c, int32_t stream_id, const uint8_t *data, size_t len) {
    h2g_stream *s = live_stream(c, stream_id);
    if (!s) return H2G_IGNORED;
    if (len > UINT32_MAX) return H2G_FAILED;
    if (s->out_pos && s->out_pos >= s->out.len / 2) { /* keep the queue compact under a slow reader */
        s->out.len -= s->out_pos;
        memmove(s->out.data, s->out.data + s->out_pos, s->out.len);
        s->out_pos = 0;
    }
    if (buf_reserve(&s->out, 5 + len)) return H2G_NOMEM;
    uint8_t *p = s->out.data + s->out.len;
    p[0] = 0;
    p[1] = (uint8_t)(len >> 24);
    p[2] = (uint8_t)(len >> 16);
    p[3] = (uint8_t)(len >> 8);
    p[4] = (uint8_t)len;
    if (len) memcpy(p + 5, data, len);
    s->out.len += 5 + len;
    if (!s->headers_sent) {
        nghttp2_data_provider provider = provider_of(s);
        int rv = submit_response(c, s, NULL, 0, &provider);
        if (rv) return rv;
        s->headers_sent = 1;
    } else if (s->deferred) {
        s->deferred = 0;
        nghttp2_session_resume_data(c->session, stream_id);
    }
    return s->out.len - s->out_pos > c->queue_limit ? H2G_QUEUE_FULL : H2G_OK;
}

/* Bytes of response messages of the stream not yet in a DATA frame; -1 once the stream is gone. */
H2G_API int64_t h2g_queued(h2g_conn *c, int32_t stream_id) {
    if (!c || stream_id <= 0) return -1;
    h2g_stream *s = nghttp2_session_get_stream_user_data(c->session, stream_id);
    if (!s || !s->requested) return -1;
    return (int64_t)(s->out.len - s->out_pos);
}

/* The application took `size` bytes of the stream's messages (5 + length each): once what it has not taken is
   below the limit, the stream's window opens again. Returns 1 when that queued a WINDOW_UPDATE to write. */
H2G_API int h2g_release(h2g_conn *c, int32_t stream_id, uint64_t size) {
    if (!c || stream_id <= 0) return 0;
    h2g_stream *s = nghttp2_session_get_stream_user_data(c->session, stream_id);
    if (!s) return 0;
    s->unread = size < s->unread ? s->unread - (size_t)size : 0;
    if (!s->withheld || s->unread >= c->unread_limit) return 0;
    int rv = nghttp2_session_consume_stream(c->session, stream_id, s->withheld);
    s->withheld = 0;
    return rv == 0 && nghttp2_session_want_write(c->session);
}

H2G_API int h2g_send_headers(h2g_conn *c, int32_t stream_id, const uint8_t *blob, size_t len) {
    h2g_stream *s = live_stream(c, stream_id);
    if (!s) return H2G_IGNORED;
    if (s->headers_sent) return H2G_HEADERS_SENT;
    nghttp2_data_provider provider = provider_of(s);
    int rv = submit_response(c, s, blob, len, &provider);
    if (rv) return rv;
    s->headers_sent = 1;
    return H2G_OK;
}

H2G_API int h2g_send_trailers(h2g_conn *c, int32_t stream_id, const uint8_t *blob, size_t len) {
    h2g_stream *s = live_stream(c, stream_id);
    if (!s) return H2G_IGNORED;
    if (!s->headers_sent) { /* Trailers-Only: one HEADERS frame that ends the stream */
        int rv = submit_response(c, s, blob, len, NULL);
        if (rv) return rv;
        s->headers_sent = 1;
        stream_done_reading(c, s);
        return H2G_OK;
    }
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) return H2G_NOMEM;
    if (len) memcpy(copy, blob, len);
    s->trailers = copy;
    s->trailers_len = len;
    stream_done_reading(c, s);
    if (s->deferred) {
        s->deferred = 0;
        nghttp2_session_resume_data(c->session, stream_id);
    }
    return H2G_OK;
}

H2G_API int h2g_reset(h2g_conn *c, int32_t stream_id, uint32_t error_code) {
    h2g_stream *s = live_stream(c, stream_id);
    if (!s) return H2G_IGNORED;
    stream_done_reading(c, s);
    return nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, stream_id, error_code) ? H2G_FAILED : H2G_OK;
}

H2G_API void h2g_shutdown(h2g_conn *c, int graceful) {
    if (!c) return;
    if (!graceful) {
        if (c->shutdown_state < 3) nghttp2_session_terminate_session(c->session, NGHTTP2_NO_ERROR);
        c->shutdown_state = 3;
        return;
    }
    if (c->shutdown_state) return;
    nghttp2_submit_shutdown_notice(c->session);
    nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, SHUTDOWN_PING);
    c->shutdown_state = 1;
}

H2G_API int32_t h2g_open_streams(h2g_conn *c) { return c ? c->open_streams : 0; }

H2G_API int h2g_wants_close(h2g_conn *c) {
    if (!c) return 1;
    return !nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session);
}
