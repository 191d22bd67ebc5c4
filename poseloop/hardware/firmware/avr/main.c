/*
 * poseloop reference device as plain AVR C for an ATmega328P at 16 MHz (Arduino Uno/Nano
 * wiring, no Arduino core): the same protocol core and pin mapping as the sketch.
 * UART 115200 8N1 with interrupt-driven receive and transmit rings, a 1 kHz Timer0 clock.
 */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <string.h>
#include <util/atomic.h>

#include "poseloop_core.h"

#define BAUD 115200
#define BAUD_TOL 3
#include <util/setbaud.h>

#define RING 64 /* bytes, a power of two */

static volatile uint32_t ms_count;
static volatile uint8_t rx_buf[RING], rx_head, rx_tail;
static volatile uint8_t tx_buf[RING], tx_head, tx_tail;

ISR(TIMER0_COMPA_vect) { ms_count++; }

ISR(USART_RX_vect) {
    uint8_t c = UDR0;
    uint8_t next = (rx_head + 1) & (RING - 1);
    if (next != rx_tail) { /* full: the byte is lost, the line will be answered ERR */
        rx_buf[rx_head] = c;
        rx_head = next;
    }
}

ISR(USART_UDRE_vect) {
    if (tx_head == tx_tail) {
        UCSR0B &= (uint8_t)~_BV(UDRIE0);
        return;
    }
    UDR0 = tx_buf[tx_tail];
    tx_tail = (tx_tail + 1) & (RING - 1);
}

/* Channels 0..5 are PD2..PD7 (pins 2..7), channels 6..7 are PB0..PB1 (pins 8..9). */
void pl_board_output(uint8_t channel, uint8_t high) {
    volatile uint8_t *port = channel < 6 ? &PORTD : &PORTB;
    uint8_t bit = channel < 6 ? _BV(channel + 2) : _BV(channel - 6);
    if (high) {
        *port |= bit;
    } else {
        *port &= (uint8_t)~bit;
    }
}

uint32_t pl_board_millis(void) {
    uint32_t now;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { now = ms_count; }
    return now;
}

void pl_board_reply(const char *line) {
    uint8_t len = (uint8_t)strlen(line);
    uint8_t used = (tx_head - tx_tail) & (RING - 1);
    if (len > RING - 1 - used) {
        return; /* the host is not reading: drop the whole reply, never half of it */
    }
    while (*line) {
        tx_buf[tx_head] = (uint8_t)*line++;
        tx_head = (tx_head + 1) & (RING - 1);
    }
    UCSR0B |= _BV(UDRIE0);
}

int main(void) {
    DDRD |= 0xFC; /* PD2..PD7 */
    DDRB |= 0x03; /* PB0..PB1 */
    pl_init();

    UBRR0H = UBRRH_VALUE;
    UBRR0L = UBRRL_VALUE;
#if USE_2X
    UCSR0A |= _BV(U2X0);
#else
    UCSR0A &= (uint8_t)~_BV(U2X0);
#endif
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00);
    UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);

    TCCR0A = _BV(WGM01);             /* CTC */
    TCCR0B = _BV(CS01) | _BV(CS00);  /* clk/64 */
    OCR0A = (uint8_t)(F_CPU / 64 / 1000 - 1);
    TIMSK0 = _BV(OCIE0A);
    sei();

    for (;;) {
        while (rx_tail != rx_head) {
            char c = (char)rx_buf[rx_tail];
            rx_tail = (rx_tail + 1) & (RING - 1);
            pl_receive(c);
        }
        pl_poll();
    }
}
