#include "CMQTTShims.h"
#include <dlfcn.h>
#include <pthread.h>

/// The functions Tether calls, looked up once in the loaded libmosquitto.
static struct {
    int (*lib_init)(void);
    int (*lib_version)(int *, int *, int *);
    struct mosquitto *(*new_client)(const char *, bool, void *);
    void (*destroy)(struct mosquitto *);
    void (*user_data_set)(struct mosquitto *, void *);
    int (*tls_set)(struct mosquitto *, const char *, const char *, const char *, const char *, int (*)(char *, int, int, void *));
    int (*reconnect_delay_set)(struct mosquitto *, unsigned int, unsigned int, bool);
    int (*connect)(struct mosquitto *, const char *, int, int);
    int (*connect_async)(struct mosquitto *, const char *, int, int);
    int (*disconnect)(struct mosquitto *);
    int (*subscribe)(struct mosquitto *, int *, const char *, int);
    int (*publish)(struct mosquitto *, int *, const char *, int, const void *, int, bool);
    int (*loop)(struct mosquitto *, int, int);
    int (*loop_start)(struct mosquitto *);
    int (*loop_stop)(struct mosquitto *, bool);
    const char *(*strerror)(int);
    const char *(*connack_string)(int);
    void (*connect_callback_set)(struct mosquitto *, void (*)(struct mosquitto *, void *, int));
    void (*disconnect_callback_set)(struct mosquitto *, void (*)(struct mosquitto *, void *, int));
    void (*message_callback_set)(struct mosquitto *, void (*)(struct mosquitto *, void *, const struct mosquitto_message *));
    void (*publish_callback_set)(struct mosquitto *, void (*)(struct mosquitto *, void *, int));
} mqtt;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static const char *load_error = "libmosquitto was not loaded";

static void load(void) {
    // The soname Debian's libmosquitto1 installs; the package depends on it.
    void *library = dlopen("libmosquitto.so.1", RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        load_error = "libmosquitto.so.1 cannot be loaded (install libmosquitto1)";
        return;
    }
#define FIND(field, name) \
    if ((*(void **)&mqtt.field = dlsym(library, name)) == NULL) { \
        load_error = "libmosquitto.so.1 lacks " name " (libmosquitto 2.0 or later is needed)"; \
        dlclose(library); \
        return; \
    }
    FIND(lib_init, "mosquitto_lib_init")
    FIND(lib_version, "mosquitto_lib_version")
    FIND(new_client, "mosquitto_new")
    FIND(destroy, "mosquitto_destroy")
    FIND(user_data_set, "mosquitto_user_data_set")
    FIND(tls_set, "mosquitto_tls_set")
    FIND(reconnect_delay_set, "mosquitto_reconnect_delay_set")
    FIND(connect, "mosquitto_connect")
    FIND(connect_async, "mosquitto_connect_async")
    FIND(disconnect, "mosquitto_disconnect")
    FIND(subscribe, "mosquitto_subscribe")
    FIND(publish, "mosquitto_publish")
    FIND(loop, "mosquitto_loop")
    FIND(loop_start, "mosquitto_loop_start")
    FIND(loop_stop, "mosquitto_loop_stop")
    FIND(strerror, "mosquitto_strerror")
    FIND(connack_string, "mosquitto_connack_string")
    FIND(connect_callback_set, "mosquitto_connect_callback_set")
    FIND(disconnect_callback_set, "mosquitto_disconnect_callback_set")
    FIND(message_callback_set, "mosquitto_message_callback_set")
    FIND(publish_callback_set, "mosquitto_publish_callback_set")
#undef FIND
    // 2.0 made the network thread's waits interruptible (a stop does not sit out a back-off).
    int major = 0, minor = 0, revision = 0;
    mqtt.lib_version(&major, &minor, &revision);
    if (major < 2) {
        load_error = "libmosquitto 2.0 or later is needed (this one is older)";
        return;
    }
    if (mqtt.lib_init() != MOSQ_ERR_SUCCESS) {
        load_error = "libmosquitto could not initialise (mosquitto_lib_init failed)";
        return;
    }
    load_error = NULL;
}

const char *tether_mqtt_load(void) {
    pthread_once(&load_once, load);
    return load_error;
}

struct mosquitto *tether_mqtt_new(const char *id, bool clean_session, void *context) { return mqtt.new_client(id, clean_session, context); }
void tether_mqtt_destroy(struct mosquitto *client) { mqtt.destroy(client); }
void tether_mqtt_user_data_set(struct mosquitto *client, void *context) { mqtt.user_data_set(client, context); }
int tether_mqtt_tls_set(struct mosquitto *client, const char *ca_file, const char *certificate_file, const char *key_file) {
    return mqtt.tls_set(client, ca_file, NULL, certificate_file, key_file, NULL);
}
int tether_mqtt_reconnect_delay_set(struct mosquitto *client, unsigned int delay, unsigned int maximum, bool exponential) {
    return mqtt.reconnect_delay_set(client, delay, maximum, exponential);
}
int tether_mqtt_connect(struct mosquitto *client, const char *host, int port, int keepalive) { return mqtt.connect(client, host, port, keepalive); }
int tether_mqtt_connect_async(struct mosquitto *client, const char *host, int port, int keepalive) {
    return mqtt.connect_async(client, host, port, keepalive);
}
int tether_mqtt_disconnect(struct mosquitto *client) { return mqtt.disconnect(client); }
int tether_mqtt_subscribe(struct mosquitto *client, int *mid, const char *topic, int qos) { return mqtt.subscribe(client, mid, topic, qos); }
int tether_mqtt_publish(struct mosquitto *client, int *mid, const char *topic, int length, const void *payload, int qos, bool retain) {
    return mqtt.publish(client, mid, topic, length, payload, qos, retain);
}
int tether_mqtt_loop(struct mosquitto *client, int timeout_ms) { return mqtt.loop(client, timeout_ms, 1); }
int tether_mqtt_loop_start(struct mosquitto *client) { return mqtt.loop_start(client); }
int tether_mqtt_loop_stop(struct mosquitto *client, bool force) { return mqtt.loop_stop(client, force); }
const char *tether_mqtt_strerror(int code) { return mqtt.strerror(code); }
const char *tether_mqtt_connack_string(int code) { return mqtt.connack_string(code); }

void tether_mqtt_callbacks_set(struct mosquitto *client, tether_mqtt_connect_callback on_connect,
                               tether_mqtt_connect_callback on_disconnect, tether_mqtt_message_callback on_message,
                               tether_mqtt_publish_callback on_publish) {
    mqtt.connect_callback_set(client, on_connect);
    mqtt.disconnect_callback_set(client, on_disconnect);
    mqtt.message_callback_set(client, on_message);
    mqtt.publish_callback_set(client, on_publish);
}
