/*
 * poseloop reference device: parses and executes ON n, OFF n, PULSE n ms, PING and
 * WATCHDOG ms, and answers each line with PONG, "OK <line>" or "ERR <reason>" (the same
 * replies as poseloop.hardware.emulator). Pulses are timed with the board's millisecond
 * clock. With WATCHDOG ms (0 = off) set, ms milliseconds without a byte from the host turn
 * every output off: a host that died or lost its cable cannot leave a stimulus on.
 */
#include "poseloop_core.h"

#include <string.h>

static char line[PL_MAX_LINE + 1];
static uint8_t line_len;
static uint8_t overflow;
static uint8_t pulsing[PL_CHANNELS];
static uint32_t pulse_end[PL_CHANNELS];
static uint32_t watchdog_ms;  /* 0 = off */
static uint32_t last_rx;      /* millis() of the last byte from the host */
static uint8_t tripped;       /* the watchdog has turned the outputs off since that byte */

static void set_output(uint8_t channel, uint8_t high) {
    pulsing[channel] = 0;
    pl_board_output(channel, high);
}

/* 1..max_digits decimal digits at *p (advanced past them), or -1. */
static int32_t parse_number(const char **p, uint8_t max_digits) {
    int32_t value = 0;
    uint8_t digits = 0;
    while (**p >= '0' && **p <= '9') {
        if (++digits > max_digits) {
            return -1;
        }
        value = value * 10 + (**p - '0');
        (*p)++;
    }
    return digits ? value : -1;
}

static void execute(void) {
    enum { ON, OFF, PULSE } verb;
    const char *p = line;
    int32_t channel;
    int32_t ms = 0;
    char reply[PL_MAX_LINE + 5];

    if (strcmp(line, "PING") == 0) {
        pl_board_reply("PONG\n");
        return;
    }
    if (strncmp(p, "WATCHDOG ", 9) == 0) {
        p += 9;
        ms = parse_number(&p, 5);
        if (ms < 0 || ms > PL_MAX_WATCHDOG_MS || *p != '\0') {
            pl_board_reply("ERR bad command\n");
            return;
        }
        watchdog_ms = (uint32_t)ms;
        strcpy(reply, "OK ");
        strcat(reply, line);
        strcat(reply, "\n");
        pl_board_reply(reply);
        return;
    }
    if (strncmp(p, "ON ", 3) == 0) {
        verb = ON;
        p += 3;
    } else if (strncmp(p, "OFF ", 4) == 0) {
        verb = OFF;
        p += 4;
    } else if (strncmp(p, "PULSE ", 6) == 0) {
        verb = PULSE;
        p += 6;
    } else {
        pl_board_reply("ERR bad command\n");
        return;
    }
    channel = parse_number(&p, 3);
    if (verb == PULSE && *p == ' ') {
        p++;
        ms = parse_number(&p, 5);
        if (ms < 1 || ms > PL_MAX_PULSE_MS) {
            channel = -1;
        }
    } else if (verb == PULSE) {
        channel = -1;
    }
    if (channel < 0 || channel > 255 || *p != '\0') {
        pl_board_reply("ERR bad command\n");
        return;
    }
    if (channel >= PL_CHANNELS) {
        pl_board_reply("ERR channel out of range\n");
        return;
    }
    set_output((uint8_t)channel, verb != OFF);
    if (verb == PULSE) {
        pulse_end[channel] = pl_board_millis() + (uint32_t)ms;
        pulsing[channel] = 1;
    }
    strcpy(reply, "OK ");
    strcat(reply, line);
    strcat(reply, "\n");
    pl_board_reply(reply);
}

void pl_init(void) {
    uint8_t channel;
    for (channel = 0; channel < PL_CHANNELS; channel++) {
        set_output(channel, 0);
    }
    line_len = 0;
    overflow = 0;
    watchdog_ms = 0;
    tripped = 0;
}

void pl_receive(char c) {
    last_rx = pl_board_millis();
    tripped = 0;
    if (c != '\n') {
        if (line_len < PL_MAX_LINE) {
            line[line_len++] = c;
        } else {
            overflow = 1;
        }
        return;
    }
    if (line_len > 0 && line[line_len - 1] == '\r') {
        line_len--;
    }
    line[line_len] = '\0';
    if (overflow) {
        pl_board_reply("ERR line too long\n");
    } else {
        execute();
    }
    line_len = 0;
    overflow = 0;
}

void pl_poll(void) {
    uint32_t now = pl_board_millis();
    uint8_t channel;
    if (watchdog_ms && !tripped && now - last_rx >= watchdog_ms) {
        tripped = 1;
        for (channel = 0; channel < PL_CHANNELS; channel++) {
            set_output(channel, 0);
        }
    }
    for (channel = 0; channel < PL_CHANNELS; channel++) {
        /* signed difference: correct across the 49-day wrap of the millisecond clock */
        if (pulsing[channel] && (int32_t)(now - pulse_end[channel]) >= 0) {
            set_output(channel, 0);
        }
    }
}
