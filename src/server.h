/*
 * server: the OpenAI-compatible HTTP server (libmicrohttpd) in front of one engine.
 *
 * Endpoints (server.c has the full description, oai.h the request fields):
 *   POST /v1/completions        text_completion, streaming or not
 *   POST /v1/chat/completions   chat.completion(.chunk), messages → ChatML (chat.h)
 *   GET  /v1/models             the served model
 *   GET  /health                {"status": "ok"}; ?check=1 also runs hs_engine_check on
 *                               the engine thread and reports page counts (200 / 500)
 *   GET  /metrics               Prometheus text
 *
 * Threads: one engine thread owns the hs_engine_t (it creates, steps and destroys it);
 * libmicrohttpd runs one thread per connection, which parses, tokenizes, queues the
 * request and then blocks on the request's own event queue while it streams.
 *
 * Lifetime: srv_create → (serve) → srv_shutdown → srv_destroy. All calls from one
 * (the main) thread. Errors are returned, never exited on.
 */
#ifndef HS_SERVER_H
#define HS_SERVER_H

#include <stddef.h>

#include "hyserve.h"

typedef struct srv srv_t;

typedef struct {
    const char *host;              /* bind address (IPv4 or IPv6 literal); default "127.0.0.1" */
    int port;                      /* default 8000; 0: any free port (srv_port tells which) */
    const char *api_key;           /* NULL or "": no authentication */
    const char *served_model_name; /* NULL: the last component of engine.model */
    const char *tokenizer;         /* tokenizer.json or its directory; NULL: the model directory */
    int max_connections;           /* concurrent HTTP connections; default 1024 */
    hs_engine_config_t engine;
} srv_config_t;

void srv_config_default(srv_config_t *c);

/* Load the tokenizer and chat template, start the engine thread (which creates the
 * engine) and listen. HS_OK or an error with the message in err. */
int srv_create(const srv_config_t *c, srv_t **out, char *err, size_t n);

/* The port actually bound; the model name the API uses. */
int srv_port(const srv_t *s);
const char *srv_model_name(const srv_t *s);

/* Graceful stop: stop accepting (the listening socket closes, new requests on open
 * connections get 503), give in-flight requests up to drain_s seconds to finish,
 * then cancel what is left (streams end with finish_reason "abort") and wait up to
 * 2 s more for their responses. Returns the number of requests aborted. */
int srv_shutdown(srv_t *s, double drain_s);

/* Stop everything (calls srv_shutdown(s, 0) if not done), join the threads, destroy
 * the engine, free. NULL is fine. */
void srv_destroy(srv_t *s);

#endif
