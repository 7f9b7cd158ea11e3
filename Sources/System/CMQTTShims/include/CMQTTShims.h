#ifndef TETHER_MQTT_SHIMS_H
#define TETHER_MQTT_SHIMS_H
#include <mosquitto.h>
#include <stdbool.h>

/// libmosquitto is loaded when a process first speaks MQTT (dlopen of libmosquitto.so.1), not at
/// start: only `run --notify` and `publish --notify` do. Returns NULL once loaded (and
/// mosquitto_lib_init done), else why not (a static string). Safe from any thread; loads once.
const char *tether_mqtt_load(void);

/// libmosquitto's functions, through the loaded library: call tether_mqtt_load() first.
struct mosquitto *tether_mqtt_new(const char *id, bool clean_session, void *context);
void tether_mqtt_destroy(struct mosquitto *client);
/// The context every callback receives.
void tether_mqtt_user_data_set(struct mosquitto *client, void *context);
int tether_mqtt_tls_set(struct mosquitto *client, const char *ca_file, const char *certificate_file, const char *key_file);
int tether_mqtt_reconnect_delay_set(struct mosquitto *client, unsigned int delay, unsigned int maximum, bool exponential);
int tether_mqtt_connect(struct mosquitto *client, const char *host, int port, int keepalive);
int tether_mqtt_connect_async(struct mosquitto *client, const char *host, int port, int keepalive);
int tether_mqtt_disconnect(struct mosquitto *client);
int tether_mqtt_subscribe(struct mosquitto *client, int *mid, const char *topic, int qos);
int tether_mqtt_publish(struct mosquitto *client, int *mid, const char *topic, int length, const void *payload, int qos, bool retain);
int tether_mqtt_loop(struct mosquitto *client, int timeout_ms);
int tether_mqtt_loop_start(struct mosquitto *client);
int tether_mqtt_loop_stop(struct mosquitto *client, bool force);
const char *tether_mqtt_strerror(int code);
const char *tether_mqtt_connack_string(int code);

typedef void (*tether_mqtt_connect_callback)(struct mosquitto *client, void *context, int code);
typedef void (*tether_mqtt_message_callback)(struct mosquitto *client, void *context, const struct mosquitto_message *message);
typedef void (*tether_mqtt_publish_callback)(struct mosquitto *client, void *context, int mid);
void tether_mqtt_callbacks_set(struct mosquitto *client, tether_mqtt_connect_callback on_connect,
                               tether_mqtt_connect_callback on_disconnect, tether_mqtt_message_callback on_message,
                               tether_mqtt_publish_callback on_publish);
#endif
