/*
 * Runs the AVR firmware in simavr with UART0 on a pseudo-terminal, for the tests.
 * Prints "PTY <slave path>" once the port is up, then "OUT <channel> <level> <ms>" at each
 * change of an output pin (ms of simulated time), and simulates until killed.
 * With a strobe period, a simulated camera drives the strobe input (PC0, Arduino A0) high
 * for width_us every period_us and each rising edge is printed as "STROBE <n> <ms>": the
 * truth the firmware's own exposure stamps are checked against.
 * Build: make sim (needs libsimavr-dev).
 * Usage: uart_pty_sim firmware.elf [strobe_period_us [strobe_width_us]]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "avr_ioport.h"
#include "sim_avr.h"
#include "sim_elf.h"
#include "sim_time.h"
#include "uart_pty.h"

static avr_t *avr;
static uart_pty_t uart;
static avr_irq_t *strobe_pin;
static uint32_t strobe_period_us, strobe_width_us, strobe_count;
static int strobe_high;

static double sim_ms(void) {
    return (double)avr->cycle * 1000.0 / avr->frequency;
}

/* The simulated camera: high for width_us at the start of every period_us. */
static avr_cycle_count_t on_strobe(struct avr_t *a, avr_cycle_count_t when, void *param) {
    (void)param;
    strobe_high = !strobe_high;
    avr_raise_irq(strobe_pin, (uint32_t)strobe_high);
    if (strobe_high) {
        printf("STROBE %u %.4f\n", strobe_count++, sim_ms());
        fflush(stdout);
    }
    return when + avr_usec_to_cycles(a, strobe_high ? strobe_width_us
                                                    : strobe_period_us - strobe_width_us);
}

static void on_pin(struct avr_irq_t *irq, uint32_t value, void *channel) {
    (void)irq;
    printf("OUT %d %u %.4f\n", (int)(intptr_t)channel, value, sim_ms());
    fflush(stdout);
}

int main(int argc, char *argv[]) {
    elf_firmware_t firmware;
    int channel;
    int state;

    memset(&firmware, 0, sizeof(firmware));
    if (argc < 2 || argc > 4 || elf_read_firmware(argv[1], &firmware) != 0) {
        fprintf(stderr, "usage: %s firmware.elf [strobe_period_us [strobe_width_us]]\n",
                argv[0]);
        return 2;
    }
    strobe_period_us = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 0;
    strobe_width_us = argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 10) : 100;
    if (strobe_period_us && strobe_width_us >= strobe_period_us) {
        fprintf(stderr, "the strobe width must be shorter than its period\n");
        return 2;
    }
    if (!firmware.mmcu[0]) {
        strcpy(firmware.mmcu, "atmega328p");
    }
    if (!firmware.frequency) {
        firmware.frequency = 16000000;
    }
    avr = avr_make_mcu_by_name(firmware.mmcu);
    if (!avr) {
        fprintf(stderr, "simavr does not know %s\n", firmware.mmcu);
        return 2;
    }
    avr_init(avr);
    avr_load_firmware(avr, &firmware);
    /* channel n: PD(n+2) for n < 6, PB(n-6) otherwise, as in avr/main.c */
    for (channel = 0; channel < 8; channel++) {
        avr_irq_t *pin = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ(channel < 6 ? 'D' : 'B'),
                                       channel < 6 ? channel + 2 : channel - 6);
        avr_irq_register_notify(pin, on_pin, (void *)(intptr_t)channel);
    }
    if (strobe_period_us) {
        strobe_pin = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('C'), 0);
        avr_raise_irq(strobe_pin, 0);
        avr_cycle_timer_register_usec(avr, strobe_period_us, on_strobe, NULL);
    }
    uart_pty_init(avr, &uart);
    uart_pty_connect(&uart, '0');
    printf("PTY %s\n", uart.port[0].slavename);
    fflush(stdout);
    do {
        state = avr_run(avr);
    } while (state != cpu_Done && state != cpu_Crashed);
    uart_pty_stop(&uart);
    return state == cpu_Done ? 0 : 1;
}
